# -*- coding: utf-8 -*-
# Copyright: the provision authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's half of provision.fleet.provision: check the manifest here, then copy to the
host only what it lacks (the binary, the manifest and the files it reads), then run the module."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import hashlib
import json
import os
import shutil
import subprocess

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

BINARY = "bin/provision"
MODULE = "provision.fleet.provision"
VALIDATE_LIMIT = 120


def stamp(path):
    """What changes when a file is written, replaced or touched: its device, inode, size, mtime
    and ctime (which a program cannot set back)."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def run_cached(key, compute, fresh=lambda value: True):
    """compute(), worked out once per ansible-playbook run rather than once per host.

    The answers are kept in Ansible's local temporary folder for the run (C.DEFAULT_LOCAL_TMP:
    made before the forks, shared by them, removed by Ansible when the run ends), one file per
    key. A lock per key makes the forks that ask at once wait for the first one's answer instead
    of all working it out. An answer that `fresh` rejects is worked out again. Where the folder
    cannot be used, each host works it out itself, as without the cache.
    """
    try:
        folder = os.path.join(C.DEFAULT_LOCAL_TMP, "provision")
        if not os.path.isdir(folder):
            os.makedirs(folder, 0o700)
    except (OSError, TypeError):
        return compute()
    path = os.path.join(folder, hashlib.sha1(json.dumps(key).encode()).hexdigest())
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                value = json.load(f)
            if fresh(value):
                return value
        except (IOError, OSError, ValueError):
            pass
        value = compute()
        with open(path + ".tmp", "w") as f:
            json.dump(value, f)
        os.rename(path + ".tmp", path)
        return value


def read_sha1(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha1(path):
    """The file's SHA-1, read once per run for each version of the file (the debug binary is
    hundreds of MB: reading it for every host was a cost that grew with the fleet)."""
    return run_cached(["sha1", os.path.abspath(path), stamp(path)], lambda: read_sha1(path))


def describe(errors):
    """provision's manifest errors, one per line, as `file:line:column: message (hint)`."""
    lines = []
    for e in errors:
        line = "%s:%s:%s: %s" % (e.get("file"), e.get("line"), e.get("column"), e.get("message"))
        if e.get("hint"):
            line += " (hint: %s)" % e["hint"]
        lines.append(line)
    return "\n".join(lines)


def validate(binary, manifest):
    """`provision validate --json` on the controller, once per run for each version of the binary
    and the manifest's files: the parsed answer, or why it could not run."""
    def stamp_or_none(path):
        return stamp(path) if os.path.exists(path) else None

    def compute():
        answer = run_validate(binary, manifest)
        files = [f["path"] for f in answer.get("files", [])]
        return {"answer": answer, "stamps": dict((p, stamp_or_none(p)) for p in files)}

    def fresh(value):
        try:
            return all(stamp_or_none(p) == s for p, s in value["stamps"].items())
        except (OSError, KeyError, AttributeError):
            return False

    key = ["validate", binary, stamp(binary), manifest, stamp(manifest)]
    return run_cached(key, compute, fresh)["answer"]


def run_validate(binary, manifest):
    try:
        proc = subprocess.run([binary, "validate", "--json", manifest], capture_output=True,
                              timeout=VALIDATE_LIMIT, env=dict(os.environ, NO_COLOR="1"),
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AnsibleActionFail("cannot run %s on the controller to check the manifest: %s"
                                % (binary, to_text(e)))
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        raise AnsibleActionFail("%s validate --json %s printed no JSON (exit %d): %s"
                                % (binary, manifest, proc.returncode,
                                   to_text(proc.stderr).strip()))
    return answer


class ActionModule(ActionBase):

    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(("manifest", "node", "binary", "root", "remote_dir"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = self._task.args
        result.update(changed=False, binary_copied=False, files_copied=[], not_copied=[])
        try:
            return self._run(args, task_vars, result)
        except AnsibleActionFail as e:
            result.update(e.result)
            return result
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _run(self, args, task_vars, result):
        if not args.get("manifest"):
            raise AnsibleActionFail("manifest is required")
        manifest = os.path.abspath(self._find_needle("files", args["manifest"]))
        binary = args.get("binary") or shutil.which("provision")
        if not binary:
            raise AnsibleActionFail("no provision binary: give binary:, or put provision on the "
                                    "controller's PATH")
        binary = os.path.abspath(os.path.expanduser(binary))
        if not os.path.isfile(binary):
            raise AnsibleActionFail("binary %s does not exist on the controller" % binary)
        node = args.get("node") or task_vars.get("provision_node") \
            or task_vars.get("inventory_hostname")

        # The manifest is checked here, before any host is touched.
        answer = validate(binary, manifest)
        if not answer.get("valid"):
            errors = answer.get("errors", [])
            raise AnsibleActionFail("the manifest is invalid, nothing was touched:\n"
                                    + describe(errors), result=dict(errors=errors))
        names = [n["name"] for n in answer.get("nodes", [])]
        if node not in names:
            raise AnsibleActionFail("node %r is not in %s (its nodes: %s); set the host's "
                                    "provision_node or the task's node:"
                                    % (node, manifest, ", ".join(names)))

        # What to copy: the files named by relative paths, kept in their layout under the
        # folder that holds them all; those named by an absolute path are the host's own.
        relative = [f for f in answer.get("files", []) if f["kind"] == "manifest"
                    or not os.path.isabs(f["written"])]
        result["not_copied"] = sorted(f["path"] for f in answer.get("files", [])
                                      if f not in relative)
        paths = [os.path.normpath(f["path"]) for f in relative]
        base = os.path.commonpath([os.path.dirname(p) for p in paths])
        files = {}
        local = {}
        for f, path in zip(relative, paths):
            rel = os.path.relpath(path, base)
            files[rel] = {"sha1": sha1(path), "kind": f["kind"]}
            local[rel] = path
        local[BINARY] = binary
        expected = {"files": files, "binary": sha1(binary),
                    "manifest": os.path.relpath(manifest, base)}

        module_args = dict(manifest=manifest, node=node, expected=expected,
                           root=args.get("root", "/"),
                           remote_dir=args.get("remote_dir", "/var/lib/provision/ansible"))
        res = self._execute_module(MODULE, module_args=module_args, task_vars=task_vars)
        if res.get("provision_need") and not res.get("failed"):
            # Upload what the host lacks to Ansible's temporary folder; the module moves it into
            # place (or, in check mode, runs from there and keeps nothing).
            tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
            staged = {}
            for i, rel in enumerate(res["provision_need"]):
                remote = self._connection._shell.join_path(tmpdir, "stage-%d" % i)
                self._transfer_file(local[rel], remote)
                staged[rel] = remote
            self._fixup_perms2([tmpdir] + list(staged.values()))
            module_args["staged"] = staged
            res = self._execute_module(MODULE, module_args=module_args, task_vars=task_vars)
        res.pop("provision_need", None)
        # Paths in provision's messages name the host's copy: show the controller's instead.
        tree = res.pop("tree", None)
        if tree:
            for key in ("msg", "stderr"):
                if isinstance(res.get(key), str):
                    res[key] = res[key].replace(tree.rstrip("/") + "/", base + "/")
        result.update(res)
        return result
