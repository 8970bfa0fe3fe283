"""Provisioning: cloud-init user-data for each role, and servers on OpenStack."""
