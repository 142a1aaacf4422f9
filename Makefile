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

# The local sandbox (sandbox/README.md): moto, the Discord emulator and a systemd-nspawn machine on this host,
# configured by the real playbooks. Needs root, since it boots machines.
.PHONY: sandbox sandbox-say sandbox-chat sandbox-deploy sandbox-status sandbox-logs sandbox-down
SANDBOX := .venv/bin/python -m sandbox
TEXT ?= hello

sandbox: setup ## Rehearse the deployment locally: stand-ins, machine, site.yml, a mention answered
	@$(SANDBOX) up

sandbox-say: setup ## Mention the sandbox bot once: make sandbox-say TEXT='hi there'
	@$(SANDBOX) say -- "$(TEXT)"

sandbox-chat: setup ## Talk to the sandbox bot interactively
	@$(SANDBOX) chat

sandbox-deploy: setup ## Ship the edited bot/echo.py to the sandbox with deploy_bot.yml
	@$(SANDBOX) deploy

sandbox-status: setup ## Show the sandbox bot's service state, release and last log lines
	@$(SANDBOX) status

sandbox-logs: setup ## Show the sandbox bot's journal
	@$(SANDBOX) logs

sandbox-down: setup ## Stop the sandbox and check nothing of it is left running
	@$(SANDBOX) down
