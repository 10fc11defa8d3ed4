"""`hermetic local up / status / down`: a local appliance in the background (dev command).

`up` starts the local Nitro CA, the KMS emulator with three identities and two keys,
and a mock enclave, and returns once all of them are ready; the other commands'
`--local` option then finds everything through the state directory. The stand-ins are
imported only in the handlers, so building the parser loads none of them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from parent.appliance import DEFAULT_STATE_DIR, ApplianceState, require_state


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "local", help="run the local appliance in the background: KMS emulator, mock enclave, keys",
        description=(
            "Start, inspect or stop the local appliance: the local Nitro CA, the KMS emulator with "
            "a data-owner, a model-owner and a parent identity, the two keys with policies rendered "
            "from the measured enclave code, and a mock enclave serving jobs. Other commands reach "
            "it with --local [DIR]."
        ),
    )
    sub = parser.add_subparsers(dest="local_command", metavar="ACTION")
    sub.required = True
    for name, help_text, func in (
        ("up", "start whatever is not running and wait until it is ready", _up),
        ("status", "report each service: running, stopped, or crashed with its log's tail", _status),
        ("down", "stop exactly the processes `up` started", _down),
    ):
        action = sub.add_parser(name, help=help_text)
        action.add_argument("--state", type=Path, default=DEFAULT_STATE_DIR, metavar="DIR",
                            help=f"state directory (default {DEFAULT_STATE_DIR})")
        action.add_argument("--json", action="store_true", help="print the result as one JSON object")
        action.set_defaults(func=func)


def _summary(state: ApplianceState) -> dict[str, Any]:
    return {
        "state": state.state_dir,
        "state_file": str(state.path),
        "kms_endpoint": state.kms_endpoint,
        "data_owner_key": state.data_owner_key,
        "model_owner_key": state.model_owner_key,
        "data_owner_alias": state.data_owner_alias,
        "model_owner_alias": state.model_owner_alias,
        "root": state.root,
        "measurements": state.measurements,
        "pcr0": state.pcrs.get("PCR0"),
        "enclave": state.enclave,
        "kms_relay": state.kms_relay,
        "ledger": str(state.ledger_dir),
        "identities": {role: {"name": i.name, "arn": i.arn, "file": i.file} for role, i in state.identities.items()},
        "services": {name: {"pid": s.pid, "address": s.address, "log": s.log} for name, s in state.services.items()},
    }


def _up(args: argparse.Namespace) -> int:
    from parent.local.appliance import up

    result = up(args.state)
    state = result.state
    if args.json:
        print(json.dumps({**_summary(state), "started": list(result.started),
                          "already_running": result.already_running,
                          "policies_updated": result.policies_updated}, indent=2))
        return 0
    if result.already_running:
        pids = ", ".join(f"{name} pid {s.pid}" for name, s in state.services.items())
        print(f"local appliance in {state.state_dir} is already running ({pids}): nothing to do")
        return 0
    print(f"local appliance up in {state.state_dir}")
    for name in result.started:
        service = state.services[name]
        print(f"  started {name:<13} pid {service.pid}  {service.address}")
    for name, service in state.services.items():
        if name not in result.started:
            print(f"  running {name:<13} pid {service.pid}  {service.address}")
    if result.policies_updated:
        print("  enclave code changed: key policies re-rendered for the new PCR0 and put on both keys")
    print(f"  data-owner key  {state.data_owner_key} ({state.data_owner_alias})")
    print(f"  model-owner key {state.model_owner_key} ({state.model_owner_alias})")
    print(f"  root            {state.root}")
    print(f"  ledger          {state.ledger_dir}")
    print(f"  measurements    {state.measurements} (PCR0 {state.pcrs.get('PCR0', '')[:24]}…)")
    return 0


def _status(args: argparse.Namespace) -> int:
    from parent.local.appliance import status

    state = require_state(args.state)
    services = status(state)
    healthy = all(s.status == "running" for s in services)
    if args.json:
        print(json.dumps({**_summary(state), "healthy": healthy,
                          "services": {s.name: s.to_json() for s in services}}, indent=2))
        return 0 if healthy else 1
    print(f"local appliance in {state.state_dir}: {'running' if healthy else 'NOT running'}")
    for service in services:
        pid = f"pid {service.pid}" if service.pid is not None else "no pid"
        print(f"  {service.name:<13} {service.status:<8} {pid}  {service.address}")
        for line in service.log_tail:
            print(f"      | {line}")
    if not healthy:
        print("  `hermetic local up` restarts what is not running")
    return 0 if healthy else 1


def _down(args: argparse.Namespace) -> int:
    from parent.local.appliance import down

    stopped = down(args.state)
    if args.json:
        print(json.dumps({"state": str(Path(args.state).resolve()),
                          "stopped": [s.to_json() for s in stopped or []]}, indent=2))
        return 0
    if stopped is None:
        print(f"no local appliance in {args.state}: nothing to stop")
    elif not stopped:
        print(f"local appliance in {args.state}: nothing was running")
    for s in stopped or []:
        print(f"{s.name} (pid {s.pid}): {_OUTCOMES.get(s.outcome, s.outcome)}")
    return 0


_OUTCOMES = {
    "stopped": "stopped",
    "killed": "killed (ignored SIGTERM)",
    "exited": "had already exited",
    "replaced": "had already exited; its PID now belongs to another process, left alone",
}
