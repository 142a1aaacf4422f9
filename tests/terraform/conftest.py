"""Fixtures for the static checks of terraform/."""

import pytest

from tests.terraform.hcl_model import TERRAFORM_DIR, TerraformConfig, load_terraform_config


@pytest.fixture(scope="session")
def tf() -> TerraformConfig:
    """The parsed configuration of terraform/."""
    assert TERRAFORM_DIR.is_dir(), f"{TERRAFORM_DIR} is missing"
    return load_terraform_config()
