# Network placement and the instance firewall. Nothing listens on the instance: Ansible and shells use Session
# Manager, whose agent connects outwards over HTTPS, and the bot itself only opens outbound connections to Discord.

data "aws_vpc" "default" {
  count   = var.subnet_id == null ? 1 : 0
  default = true
}

# Not every Availability Zone offers every instance type (t2, for one, is missing from some newer zones), so the
# default subnet is chosen among the zones that offer the requested type.
data "aws_ec2_instance_type_offerings" "bot" {
  count         = var.subnet_id == null ? 1 : 0
  location_type = "availability-zone"

  filter {
    name   = "instance-type"
    values = [var.instance_type]
  }
}

data "aws_subnets" "default_for_az" {
  count = var.subnet_id == null ? 1 : 0

  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }

  filter {
    name   = "default-for-az"
    values = ["true"]
  }

  filter {
    name   = "availability-zone"
    values = data.aws_ec2_instance_type_offerings.bot[0].locations
  }

  lifecycle {
    postcondition {
      condition     = length(self.ids) > 0
      error_message = "The default VPC has no default subnet in a zone offering instance_type. Set subnet_id."
    }
  }
}

# try() only guards the branch that is not taken when subnet_id is set; otherwise the postcondition above has
# already ensured there is a subnet to pick.
data "aws_subnet" "selected" {
  id = var.subnet_id != null ? var.subnet_id : try(sort(data.aws_subnets.default_for_az[0].ids)[0], null)
}

locals {
  ssh_allowed_cidr_is_ipv6 = var.ssh_allowed_cidr != null && strcontains(coalesce(var.ssh_allowed_cidr, "none"), ":")
}

resource "aws_security_group" "bot" {
  name        = "${local.name_prefix}-bot"
  description = "Discord bot instance: outbound HTTPS only, no inbound rule unless ssh_allowed_cidr is set"
  vpc_id      = data.aws_subnet.selected.vpc_id

  tags = {
    Name = "${local.name_prefix}-bot"
  }
}

# Outbound HTTPS is all the instance needs: the Discord gateway and REST API, the AWS APIs (Systems Manager, S3,
# Secrets Manager, CloudWatch Logs) and the Amazon Linux package repositories are all served on port 443.
# DNS and NTP need no rule: the instance uses the VPC's Amazon DNS resolver and the Amazon Time Sync Service on
# link-local addresses, and security groups do not filter traffic to those two services (nor to instance metadata).
resource "aws_vpc_security_group_egress_rule" "https_ipv4" {
  security_group_id = aws_security_group.bot.id
  description       = "HTTPS to Discord, AWS APIs and package repositories over IPv4"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "https_ipv6" {
  security_group_id = aws_security_group.bot.id
  description       = "HTTPS to Discord, AWS APIs and package repositories over IPv6, where the subnet has it"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv6         = "::/0"
}

# Exists only when an operator asks for SSH, and then for exactly one address (see the validation of
# ssh_allowed_cidr in variables.tf).
resource "aws_vpc_security_group_ingress_rule" "ssh" {
  count = var.ssh_allowed_cidr == null ? 0 : 1

  security_group_id = aws_security_group.bot.id
  description       = "SSH from the single operator address in ssh_allowed_cidr"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = local.ssh_allowed_cidr_is_ipv6 ? null : var.ssh_allowed_cidr
  cidr_ipv6         = local.ssh_allowed_cidr_is_ipv6 ? var.ssh_allowed_cidr : null
}

resource "aws_key_pair" "operator" {
  count = var.ssh_public_key_path == null ? 0 : 1

  key_name   = "${local.name_prefix}-operator"
  public_key = trimspace(file(pathexpand(var.ssh_public_key_path)))
}
