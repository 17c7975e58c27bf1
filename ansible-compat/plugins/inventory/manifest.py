# -*- coding: utf-8 -*-
# Copyright: the provision authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: manifest
short_description: A provision manifest as an Ansible inventory
version_added: "0.1.0"
description:
  - Reads a provision cluster manifest (with its C(include:) files) as an inventory, so a cluster
    is described once. Each node becomes a host with C(ansible_host) set to the node's address,
    each role a group of the nodes that have it, and the manifest's C(vars:) (the top-level ones,
    overridden key by key by the node's own, as provision's templates see them) host variables.
  - Each host also gets C(provision_node) (the node's name, which M(provision.fleet.provision)
    uses), C(provision_roles), C(provision_aliases) and C(provision_manifest) (the manifest's
    path).
  - The manifest is read by C(provision validate --json) on the controller, so it follows
    provision's own rules; an invalid manifest stops the inventory with every error and its
    C(file:line:column).
  - The file is the manifest itself, with no C(plugin:) key (provision refuses unknown keys), so
    the plugin must be enabled, e.g. C(enable_plugins = provision.fleet.manifest) in the
    C([inventory]) section of C(ansible.cfg) or E(ANSIBLE_INVENTORY_ENABLED). It takes C(.yaml)
    and C(.yml) files whose top level holds only manifest keys and has C(nodes) or C(include).
author:
  - provision authors (!UNKNOWN)
options:
  binary:
    description:
      - The C(provision) binary on the controller; default C(provision) on E(PATH).
    type: path
    env:
      - name: PROVISION_BINARY
    ini:
      - section: provision_fleet
        key: binary
"""

EXAMPLES = r"""
# ansible.cfg
# [inventory]
# enable_plugins = provision.fleet.manifest, host_list, yaml, ini

# ansible-inventory -i manifests/pyme-cluster.yaml --graph
# @all:
#   |--@ungrouped:
#   |--@master:
#   |  |--master
#   |--@worker:
#   |  |--master
#   |  |--node01
#   |  |--node02
#   |--@gpu:
#   |  |--node02

# ansible-playbook -i manifests/pyme-cluster.yaml site.yml
"""

import json
import os
import shutil
import subprocess

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.inventory import BaseInventoryPlugin

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core depends on PyYAML
    yaml = None

# The top-level keys of a provision manifest (docs/manifest.md, "Top level").
MANIFEST_KEYS = frozenset(("include", "cluster", "conda", "vars", "nodes", "resources"))
LIMIT = 120


class InventoryModule(BaseInventoryPlugin):

    NAME = "provision.fleet.manifest"

    def verify_file(self, path):
        if not super(InventoryModule, self).verify_file(path):
            return False
        if not path.endswith((".yaml", ".yml")) or yaml is None:
            return False
        try:
            with open(path, "rb") as f:
                data = yaml.safe_load(f)
        except Exception:  # not YAML at all: another plugin's file
            return False
        return (isinstance(data, dict) and bool(data) and set(data) <= MANIFEST_KEYS
                and ("nodes" in data or "include" in data))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self.set_options()
        binary = self.get_option("binary") or shutil.which("provision")
        if not binary:
            raise AnsibleParserError("the provision.fleet.manifest inventory needs the provision "
                                     "binary: put it on PATH or set PROVISION_BINARY")
        manifest = os.path.abspath(path)
        try:
            proc = subprocess.run([binary, "validate", "--json", manifest], capture_output=True,
                                  timeout=LIMIT, env=dict(os.environ, NO_COLOR="1"), check=False)
            answer = json.loads(proc.stdout)
        except (OSError, subprocess.TimeoutExpired, ValueError) as e:
            raise AnsibleParserError("cannot read %s with %s validate --json: %s"
                                     % (manifest, binary, to_text(e)))
        if not answer.get("valid"):
            lines = ["%s:%s:%s: %s" % (e.get("file"), e.get("line"), e.get("column"),
                                       e.get("message")) for e in answer.get("errors", [])]
            raise AnsibleParserError("%s is not a valid provision manifest:\n%s"
                                     % (manifest, "\n".join(lines)))
        top = answer.get("vars") or {}
        for node in answer.get("nodes", []):
            host = self.inventory.add_host(node["name"])
            merged = dict(top)
            merged.update(node.get("vars") or {})
            for key, value in merged.items():
                self.inventory.set_variable(host, key, value)
            self.inventory.set_variable(host, "ansible_host", node["address"])
            self.inventory.set_variable(host, "provision_node", node["name"])
            self.inventory.set_variable(host, "provision_roles", node.get("roles", []))
            self.inventory.set_variable(host, "provision_aliases", node.get("aliases", []))
            self.inventory.set_variable(host, "provision_manifest", manifest)
            for role in node.get("roles", []):
                group = self.inventory.add_group(role)
                self.inventory.add_child(group, host)
