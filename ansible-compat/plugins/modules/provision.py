#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the provision authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: provision
short_description: Converge a node to a provision manifest
version_added: "0.1.0"
description:
  - Runs C(provision apply --json --detailed-exitcodes --node NODE) on the host, with the
    manifest and every file it reads (C(include:) files, templates, C(source:) files, password
    files) copied from the controller, and the controller's C(provision) binary put on the host.
  - The action plugin of the same name does the copying, and only of what is missing or differs
    (SHA-1 checksums compared on the host), so a run on a converged fleet copies nothing.
  - Neither side reads the binary again on every run. The controller works out each checksum and
    the C(validate --json) answer once per C(ansible-playbook) run, not once per host. The host
    keeps its binary's SHA-1 in C(bin/provision.sha1) beside it, with the binary's inode, size,
    mtime and ctime, and reads the binary again only when one of those changed (ctime changes
    with any write, rename or chmod, and a program cannot set it back).
  - It checks the manifest on the controller first (C(provision validate --json)), so a manifest
    error, with its C(file:line:column), fails every host before any host is touched; so does a
    node the manifest does not know.
  - The JSON report becomes the task's result. C(changed) when provision changed something,
    C(failed) when a resource failed or was skipped, C(msg) a summary with each failure, and
    C(resources) the resources that changed, failed or were skipped. With C(--diff), provision's
    diffs become Ansible's (unified diffs of file contents, before/after lines for modes, owners,
    users, groups); secrets stay redacted as provision redacts them.
  - In check mode it runs C(provision plan), which writes nothing, and reports what would change;
    files missing on the host are copied to Ansible's temporary folder for that run only, so the
    host keeps nothing of it.
  - Password environment variables a manifest names (C(password_env)) are given with the task's
    C(environment:) keyword.
author:
  - provision authors (!UNKNOWN)
options:
  manifest:
    description:
      - The cluster manifest on the controller (relative paths are looked up like C(copy)'s
        C(src)).
      - It is copied to O(remote_dir)C(/manifest/) on the host with the files it reads, keeping
        their layout, so relative C(include:), C(template:), C(source:) and C(password_file:)
        paths still work there. Files the manifest names by an absolute path are not copied
        (they must exist on the host) and are listed in RV(not_copied).
    type: path
    required: true
  node:
    description:
      - The manifest's node this host is.
      - Default the host variable C(provision_node) (the manifest inventory plugin sets it),
        else the inventory hostname.
    type: str
  binary:
    description:
      - The C(provision) binary on the controller. It must run on the controller too (it checks
        the manifest there), so the controller and the hosts share an OS and architecture.
      - Default C(provision) on the controller's E(PATH).
    type: path
  root:
    description:
      - C(--root) for provision on the host; every managed path is resolved under it.
    type: path
    default: /
  remote_dir:
    description:
      - Where the binary (C(bin/provision)) and the manifest (C(manifest/)) are kept on the
        host. Made mode 0700; password files in it are 0600. Files of an earlier manifest that the
        current one no longer reads are removed from it.
    type: path
    default: /var/lib/provision/ansible
  expected:
    description:
      - Set by the action plugin, not by playbooks. The controller's checksums, the files' kinds
        and the top manifest's path in the copied tree.
    type: dict
  staged:
    description:
      - Set by the action plugin, not by playbooks. Files it uploaded to Ansible's temporary
        folder, by their path in the copied tree (V(bin/provision) for the binary).
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    description: Runs C(provision plan); nothing is written on the host.
  diff_mode:
    support: full
    description: provision's diffs, with secrets redacted.
  action:
    support: full
    description: The action plugin copies the binary and the manifest.
seealso:
  - plugin: provision.fleet.manifest
    plugin_type: inventory
notes:
  - Exit codes and the report are described in provision's C(docs/report.md).
  - When a C(provision agent) runs on the host, C(apply) hands the manifest to it, and the
    result carries the agent's answer (RV(agent)).
"""

EXAMPLES = r"""
- name: Converge every node of the cluster
  hosts: all
  gather_facts: false
  tasks:
    - name: Apply the manifest
      provision.fleet.provision:
        manifest: cluster.yaml
        binary: /usr/local/bin/provision

- name: A lab workstation whose CIFS password comes from the controller's vault
  hosts: desktops
  gather_facts: false
  tasks:
    - name: Apply
      provision.fleet.provision:
        manifest: lab-workstation.yaml
        node: lab-pc01
      environment:
        LAB_SHARE_PASSWORD: "{{ vault_lab_share_password }}"
"""

RETURN = r"""
node:
  description: The node that was reconciled.
  returned: when provision ran
  type: str
  sample: node01
summary:
  description: The report's counts (changed, unchanged, failed, skipped) and duration_ms.
  returned: when provision printed a report
  type: dict
  sample: {"changed": 2, "unchanged": 8, "failed": 0, "skipped": 0, "duration_ms": 12.5}
resources:
  description:
    - The resources that changed (or would), failed or were skipped, in the order they ran, each
      with its C(id), C(status), C(changes) (sentences) and C(error) or C(skipped_because).
  returned: when provision ran
  type: list
  elements: dict
  sample: [{"id": "file:/etc/motd", "status": "changed", "changes": ["create file"]}]
exit_code:
  description:
    - provision's exit code, with C(--detailed-exitcodes) (0 nothing changed, 2 changes, 4
      failures, 6 both). Not C(rc), which Ansible would take for a failure whenever it is not 0.
  returned: when provision ran
  type: int
  sample: 2
binary_copied:
  description: Whether the binary was copied to the host by this task.
  returned: always
  type: bool
  sample: false
files_copied:
  description: The manifest's files copied to the host by this task (paths in the tree).
  returned: always
  type: list
  elements: str
  sample: ["cluster.yaml"]
not_copied:
  description: Files the manifest names by an absolute path, left to the host.
  returned: always
  type: list
  elements: str
  sample: []
agent:
  description: The running agent's answer, when C(apply) handed the manifest to it.
  returned: when an agent runs for the root
  type: dict
  sample: {"agent_pid": 4242, "changed": 1, "failed": 0}
provision_need:
  description: Internal. The files the host lacks (the action plugin copies them and runs again).
  returned: never to a playbook
  type: list
  elements: str
  sample: []
"""

import hashlib
import json
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

BINARY = "bin/provision"
RECORD = ".sha1"


def sha1(path):
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (IOError, OSError):
        return None
    return h.hexdigest()


def binary_sha1(path, record):
    """The binary's SHA-1, from the record beside it (RECORD) when the binary's inode, size, mtime
    and ctime are still those recorded: ctime changes with any write, rename or chmod and a
    program cannot set it back, so a binary changed in any way is read again. Otherwise the
    binary is read (hundreds of MB for a debug build: every host reading it on every run was a
    cost that grew with the fleet) and, when record is true, the record is written."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    now = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    try:
        with open(path + RECORD) as f:
            kept = json.load(f)
        if kept.get("stamp") == now and kept.get("sha1"):
            return kept["sha1"]
    except (IOError, OSError, ValueError, AttributeError):
        pass
    digest = sha1(path)
    if record and digest:
        try:
            with open(path + RECORD + ".tmp", "w") as f:
                json.dump({"stamp": now, "sha1": digest}, f)
            os.rename(path + RECORD + ".tmp", path + RECORD)
        except (IOError, OSError):
            pass
    return digest


def install(module, src, dest, mode):
    """Moves the uploaded file src to dest (atomically, same folder), with mode."""
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o700)
    os.chmod(src, mode)
    module.atomic_move(src, dest)
    os.chmod(dest, mode)


def remove_stale(tree, wanted):
    """Removes the files of the tree that the manifest no longer reads, and empty folders."""
    for top, dirs, files in os.walk(tree, topdown=False):
        for name in files:
            path = os.path.join(top, name)
            if os.path.relpath(path, tree) not in wanted:
                os.unlink(path)
        for name in dirs:
            path = os.path.join(top, name)
            if not os.listdir(path):
                os.rmdir(path)


def diff_of(resource):
    """Ansible diffs for one resource of the report: its unified diffs as they are, and its other
    changes as before/after lines. Redacted content stays redacted."""
    out = []
    before, after = [], []
    for c in resource.get("changes", []):
        kind = c.get("change")
        body = c.get("diff") if kind == "edit" else c
        if kind in ("content", "edit") and body.get("unified"):
            out.append({"prepared": body["unified"]})
        elif kind in ("mode", "owner", "group"):
            before.append("%s: %s" % (kind, c.get("from") or "(none)"))
            after.append("%s: %s" % (kind, c.get("to")))
        elif kind == "attribute":
            before.append("%s: %s" % (c.get("name"), c.get("from") or "(none)"))
            after.append("%s: %s" % (c.get("name"), c.get("to") or "(none)"))
        elif kind == "package":
            name = "%s package %s" % (c.get("manager"), c.get("name"))
            before.append("%s: %s" % (name, c.get("from") or "(none)"))
            after.append("%s: %s" % (name, c.get("to") or "(none)"))
        elif kind == "create":
            before.append("%s: absent" % c.get("what"))
            after.append("%s: present" % c.get("what"))
        elif kind == "remove":
            before.append("%s: present" % c.get("what"))
            after.append("%s: absent" % c.get("what"))
        elif kind == "membership":
            before.append("group %s: %s" % (c.get("group"), "no" if c.get("join") else "member"))
            after.append("group %s: %s" % (c.get("group"), "member" if c.get("join") else "no"))
        elif kind in ("content", "edit"):
            # No unified diff: sensitive content (redacted by provision), or binary content.
            what = c.get("file") or "content"
            before.append("%s: as it is" % what)
            if body.get("redacted"):
                after.append("%s: changed (<redacted>)" % what)
            else:
                after.append("%s: changed (+%s -%s lines)" % (
                    what, body.get("lines_added"), body.get("lines_removed")))
        else:
            # Mount actions and any change kind added later: the sentence.
            before.append("%s: not yet" % c.get("text"))
            after.append("%s: done" % c.get("text"))
    if before or after:
        out.insert(0, {
            "before_header": resource["id"],
            "after_header": resource["id"],
            "before": "".join(line + "\n" for line in before),
            "after": "".join(line + "\n" for line in after),
        })
    return out


def brief(resource):
    """A resource of the report as the task result lists it."""
    out = {"id": resource["id"], "status": resource["status"]}
    out["changes"] = [c["text"] if isinstance(c, dict) else c for c in resource.get("changes", [])]
    for key in ("error", "skipped_because", "note"):
        if resource.get(key):
            out[key] = resource[key]
    return out


def summarize(node, summary, failures, check):
    verb = "would change" if check else "changed"
    text = "%s: %d %s, %d unchanged, %d failed, %d skipped" % (
        node, summary.get("changed", 0), verb, summary.get("unchanged", 0),
        summary.get("failed", 0), summary.get("skipped", 0))
    for r in failures:
        if r["status"] == "failed":
            text += "; %s failed: %s" % (r["id"], r.get("error", ""))
        else:
            text += "; %s skipped: %s" % (r["id"], r.get("skipped_because", ""))
    return text


def main():
    module = AnsibleModule(
        argument_spec=dict(
            manifest=dict(type="path", required=True),
            node=dict(type="str"),
            binary=dict(type="path"),
            root=dict(type="path", default="/"),
            remote_dir=dict(type="path", default="/var/lib/provision/ansible"),
            expected=dict(type="dict"),
            staged=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    expected = p["expected"]
    if not expected:
        module.fail_json(msg="provision.fleet.provision runs through its action plugin, which "
                             "sets `expected`; call it as a task of a play")
    remote = p["remote_dir"]
    tree = os.path.join(remote, "manifest")
    files = expected["files"]
    staged = p["staged"] or {}
    result = dict(changed=False, binary_copied=False, files_copied=[], tree=tree)

    wanted = {BINARY: expected["binary"]}
    wanted.update(dict((rel, f["sha1"]) for rel, f in files.items()))

    def installed(rel):
        return os.path.join(remote, rel) if rel == BINARY else os.path.join(tree, rel)

    def checksum(rel):
        # In check mode nothing is written under remote_dir, the binary's record included.
        if rel == BINARY:
            return binary_sha1(installed(rel), record=not module.check_mode)
        return sha1(installed(rel))

    def mode(rel):
        if rel == BINARY:
            return 0o700
        return 0o600 if files[rel]["kind"] == "password_file" else 0o644

    if module.check_mode:
        # Nothing is written under remote_dir: what is missing runs from Ansible's tmp folder.
        run_tree, binary = tree, installed(BINARY)
        if staged:
            run_tree = tempfile.mkdtemp(prefix="tree-", dir=os.path.dirname(list(staged.values())[0]))
            for rel in files:
                dest = os.path.join(run_tree, rel)
                if not os.path.isdir(os.path.dirname(dest)):
                    os.makedirs(os.path.dirname(dest), 0o700)
                shutil.copyfile(staged.get(rel) or installed(rel), dest)
                os.chmod(dest, mode(rel))
            if BINARY in staged:
                binary = staged[BINARY]
                os.chmod(binary, 0o700)
        need = [rel for rel, sum_ in wanted.items()
                if rel not in staged and checksum(rel) != sum_]
        result["tree"] = run_tree
    else:
        if staged:
            if not os.path.isdir(remote):
                os.makedirs(remote, 0o700)
            os.chmod(remote, 0o700)
            for rel, src in staged.items():
                if rel not in wanted:
                    module.fail_json(msg="staged file %s is not one the manifest reads" % rel)
                install(module, src, installed(rel), mode(rel))
            result["binary_copied"] = BINARY in staged
            result["files_copied"] = sorted(rel for rel in staged if rel != BINARY)
            result["changed"] = True
        need = [rel for rel, sum_ in wanted.items() if checksum(rel) != sum_]
        run_tree, binary = tree, installed(BINARY)
        if not need and os.path.isdir(tree):
            remove_stale(tree, set(files))
    if need:
        if staged:
            module.fail_json(msg="the files copied to the host still differ from the controller's: "
                                 + ", ".join(sorted(need)), **result)
        result["provision_need"] = sorted(need)
        module.exit_json(**result)

    node = p["node"]
    command = [binary, "plan" if module.check_mode else "apply",
               os.path.join(run_tree, expected["manifest"]), "--node", node,
               "--root", p["root"], "--json", "--detailed-exitcodes"]
    if module._diff and not module.check_mode:
        command.append("--diff")
    rc, out, err = module.run_command(command, environ_update={"NO_COLOR": "1"})
    result["exit_code"] = rc
    result["node"] = node
    if rc == 1 or rc not in (0, 2, 4, 6):
        module.fail_json(msg="provision %s on %s stopped before any resource ran (nothing was "
                             "touched): %s" % (command[1], node, err.strip() or out.strip()),
                         stderr=err, **result)
    try:
        report = json.loads(out)
    except ValueError:
        module.fail_json(msg="provision printed no JSON report (exit %d): %s" % (rc, err.strip()),
                         stdout=out, stderr=err, **result)

    if "format_version" in report:
        summary = report["summary"]
        resources = report["resources"]
    else:
        # A running agent took the manifest: its answer has the counts at the top level.
        result["agent"] = dict((k, v) for k, v in report.items() if k != "resources")
        summary = dict((k, report.get(k, 0)) for k in ("changed", "unchanged", "failed", "skipped"))
        resources = report.get("resources", [])
    listed = [brief(r) for r in resources if r.get("status") != "unchanged"]
    failures = [r for r in listed if r["status"] in ("failed", "skipped")]
    result["summary"] = summary
    result["resources"] = listed
    result["changed"] = result["changed"] or summary.get("changed", 0) > 0
    if module._diff:
        diffs = []
        for r in resources:
            if r.get("status") in ("changed", "failed") and r.get("changes"):
                if isinstance(r["changes"][0], dict):
                    diffs.extend(diff_of(r))
        result["diff"] = diffs
    result["msg"] = summarize(node, summary, failures, module.check_mode)
    if failures or rc in (4, 6):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
