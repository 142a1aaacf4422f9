terraform {
  # 1.11 is the first release that supports write-only arguments, which keep the bot token out of the state and
  # out of saved plans (secret_string_wo in secrets.tf). Cross-variable validation needs 1.9, already covered.
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.x: secret_string_wo exists since 5.88, and every argument used here was checked against the 6.x docs.
      # The upper bound keeps a future major release from changing behaviour under an unchanged configuration.
      version = ">= 6.0.0, < 7.0.0"
    }
  }
}
