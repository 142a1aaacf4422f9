# The commands a newcomer, the README and CI use. Each target installs what it needs first.
.DEFAULT_GOAL := help
SHELL := /bin/bash

.PHONY: help setup test lint lock

help: ## List the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## Install system packages and the pinned, hash-locked virtual environments
	@scripts/setup

test: setup ## Run every linter and test
	@scripts/test

lock: ## Recompile the hash-locked requirement files after editing a *.in file
	@scripts/lock
