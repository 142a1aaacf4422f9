"""The instance firewall: nothing inbound by default, never a wide inbound range, HTTPS-only outbound."""

import ipaddress
import re

import pytest

from tests.terraform.hcl_model import TerraformConfig, re2_search, reference, regex_patterns


def _ssh_validation(tf: TerraformConfig) -> dict:
    (validation,) = tf.variables["ssh_allowed_cidr"]["validation"]
    return validation


def ssh_cidr_accepted(tf: TerraformConfig, value: str) -> bool:
    """Evaluate the ssh_allowed_cidr validation the way Terraform does: its regex() and cidrhost() must both pass."""
    condition = _ssh_validation(tf)["condition"]
    (pattern,) = regex_patterns(condition)
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return False
    return re2_search(pattern, value)


def test_security_group_has_no_inline_rules(tf):
    """All rules are separate resources, so the checks below see every one of them."""
    for name, group in tf.resources_of("aws_security_group").items():
        assert "ingress" not in group, f"aws_security_group.{name} has inline ingress"
        assert "egress" not in group, f"aws_security_group.{name} has inline egress"
    assert "aws_security_group_rule" not in tf.resources


def test_no_inbound_rule_exists_by_default(tf):
    """Every ingress rule is created only when ssh_allowed_cidr is set, and that variable defaults to null."""
    ingress_rules = tf.resources_of("aws_vpc_security_group_ingress_rule")
    assert ingress_rules, "the optional SSH rule is missing"
    for name, rule in ingress_rules.items():
        assert rule.get("count") == "${var.ssh_allowed_cidr == null ? 0 : 1}", f"ingress rule {name} is unconditional"
    assert tf.variables["ssh_allowed_cidr"]["default"] is None


def test_inbound_rule_is_ssh_from_the_validated_address_only(tf):
    """The optional rule opens port 22 to var.ssh_allowed_cidr and to no literal or other address."""
    for name, rule in tf.resources_of("aws_vpc_security_group_ingress_rule").items():
        assert (rule["ip_protocol"], rule["from_port"], rule["to_port"]) == ("tcp", 22, 22), name
        assert "prefix_list_id" not in rule and "referenced_security_group_id" not in rule, name
        for family in ("cidr_ipv4", "cidr_ipv6"):
            expression = rule[family]
            assert expression.startswith("${") and "var.ssh_allowed_cidr" in expression, (name, family)
            assert not re.search(r"\d+\.\d+\.\d+\.\d+|::", expression), f"{name}.{family} holds a literal address"
            assert set(re.findall(r"var\.\w+", expression)) == {"var.ssh_allowed_cidr"}, (name, family)


@pytest.mark.parametrize(
    "cidr",
    ["0.0.0.0/0", "::/0", "10.0.0.0/8", "203.0.113.0/24", "203.0.113.7/31", "2001:db8::/64", "203.0.113.7",
     "203.0.113.300/32", "203.0.113.7/32 ", "host.example.com/32"],
)
def test_ssh_cidr_validation_refuses_ranges_and_garbage(tf, cidr):
    """ssh_allowed_cidr refuses every range (0.0.0.0/0 and ::/0 above all) and anything that is not an address."""
    assert not ssh_cidr_accepted(tf, cidr)


@pytest.mark.parametrize("cidr", ["203.0.113.7/32", "198.51.100.1/32", "2001:db8::7/128", "2001:db8:0:1::20/128"])
def test_ssh_cidr_validation_accepts_one_host(tf, cidr):
    """ssh_allowed_cidr accepts a single IPv4 /32 or IPv6 /128 address."""
    assert ssh_cidr_accepted(tf, cidr)


def test_ssh_cidr_validation_also_checks_the_address_itself(tf):
    """Besides the /32 or /128 suffix the condition parses the address with cidrhost(), as the check above assumes."""
    condition = _ssh_validation(tf)["condition"]
    assert condition.startswith("${var.ssh_allowed_cidr == null ||")
    assert "can(cidrhost(var.ssh_allowed_cidr, 0))" in condition


def test_outbound_traffic_is_https_only(tf):
    """Every egress rule allows TCP 443 and nothing else."""
    egress_rules = tf.resources_of("aws_vpc_security_group_egress_rule")
    assert egress_rules, "without an egress rule the bot could not reach Discord"
    for name, rule in egress_rules.items():
        assert (rule["ip_protocol"], rule["from_port"], rule["to_port"]) == ("tcp", 443, 443), name


def test_rules_belong_to_the_bot_security_group_on_the_instance(tf):
    """The rules above are the ones on the instance's only security group."""
    rules = {**tf.resources_of("aws_vpc_security_group_egress_rule"),
             **tf.resources_of("aws_vpc_security_group_ingress_rule")}
    for name, rule in rules.items():
        assert reference(rule["security_group_id"]) == "aws_security_group.bot.id", name
    assert tf.resource("aws_instance", "bot")["vpc_security_group_ids"] == ["${aws_security_group.bot.id}"]


def test_default_vpc_is_used_unless_a_subnet_is_given(tf):
    """Without subnet_id the instance lands in a default subnet of the default VPC that offers its type."""
    assert tf.variables["subnet_id"]["default"] is None
    assert tf.data_source("aws_vpc", "default")["default"] is True
    subnet = tf.data_source("aws_subnet", "selected")
    assert subnet["id"].startswith("${var.subnet_id != null ? var.subnet_id :")
    filters = {f["name"]: f["values"] for f in tf.data_source("aws_subnets", "default_for_az")["filter"]}
    assert filters["default-for-az"] == ["true"]
    assert reference(filters["availability-zone"]) == "data.aws_ec2_instance_type_offerings.bot[0].locations"
    assert reference(tf.resource("aws_instance", "bot")["subnet_id"]) == "data.aws_subnet.selected.id"


def test_key_pair_is_optional(tf):
    """A key pair exists only when ssh_public_key_path is given."""
    key_pair = tf.resource("aws_key_pair", "operator")
    assert key_pair["count"] == "${var.ssh_public_key_path == null ? 0 : 1}"
    assert tf.variables["ssh_public_key_path"]["default"] is None
