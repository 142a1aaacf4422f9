# The instance itself. It is launched bare: no user data, because everything on it is configured by the Ansible
# roles over Session Manager, which keeps that configuration re-runnable and testable.

locals {
  architecture = coalesce(var.architecture, startswith(var.instance_type, "t4g.") ? "arm64" : "x86_64")
}

# AWS publishes the id of the newest Amazon Linux 2023 image per architecture under this public parameter path.
data "aws_ssm_parameter" "al2023_ami" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${local.architecture}"
}

# The image id is ignored on the instance (see its lifecycle block); this value is what decides a replacement.
# It stays constant unless replace_instance_on_ami_update is true, in which case it follows the newest image and
# every change of it replaces the instance.
resource "terraform_data" "ami_release" {
  input = var.replace_instance_on_ami_update ? data.aws_ssm_parameter.al2023_ami.insecure_value : "kept at launch"
}

resource "aws_instance" "bot" {
  # The default VPC has no NAT gateway, so a public IPv4 address is the bot's only way out to Discord and AWS. No
  # inbound port is open (network.tf); associate_public_ip_address = false drops the address in NAT subnets.
  #checkov:skip=CKV_AWS_88:Needed for outbound traffic in the default VPC; no inbound rule exists by default.
  #checkov:skip=CKV_AWS_126:Billed per metric; status checks are 1-minute anyway. Opt in with detailed_monitoring.
  #checkov:skip=CKV_AWS_135:t2 cannot be EBS-optimized; t3, t3a and t4g always are, so the flag fails or does nothing.
  ami                         = data.aws_ssm_parameter.al2023_ami.insecure_value
  instance_type               = var.instance_type
  subnet_id                   = data.aws_subnet.selected.id
  vpc_security_group_ids      = [aws_security_group.bot.id]
  iam_instance_profile        = aws_iam_instance_profile.bot.name
  key_name                    = one(aws_key_pair.operator[*].key_name)
  associate_public_ip_address = var.associate_public_ip_address
  monitoring                  = var.detailed_monitoring

  # t3, t3a and t4g launch in unlimited mode, which bills surplus CPU credits; a bot that hangs in a busy loop
  # should be throttled, not run up a bill.
  credit_specification {
    cpu_credits = "standard"
  }

  # IMDSv2 only: a session token is required, and the hop limit of 1 keeps the credentials away from anything
  # that is not on the instance itself.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gib
    encrypted             = true
    delete_on_termination = true
  }

  maintenance_options {
    auto_recovery = "default"
  }

  tags = local.inventory_tags

  lifecycle {
    ignore_changes       = [ami]
    replace_triggered_by = [terraform_data.ami_release]
  }
}
