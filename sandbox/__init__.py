"""Local rehearsal of the production setup: Debian machines booted with systemd-nspawn stand in for EC2."""
