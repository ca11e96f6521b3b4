"""A call as the frames its worker reads: one plain pickle for the common call, out-of-band
buffers and envelopes for the rest (protocol.encode_call); used by the pool and by a worker lent
to another loop (runtime/lanes.py)."""

from __future__ import annotations

from openflash.workers import protocol
from openflash.workers.calls import Call
from openflash.workers.payloads import SEPARATE

__all__ = ["call_parts", "small"]


def small(call: Call) -> bool:
    """Whether ``call``'s arguments are one small pickle (no out-of-band buffer)."""
    args = call.args
    return type(args) is protocol.Packed and not args.buffers and len(args.data) < SEPARATE


def call_parts(call: Call, call_id: int, sent_blob: bool) -> list[protocol.Buffer]:
    """The CALL frame of ``call`` as call ``call_id`` on its worker, in parts to write in order;
    with its function (or class) when ``sent_blob``. A small call is one part: its plain pickle,
    as protocol.encode_call writes it, without its namedtuple copy."""
    args = call.args
    one = small(call)
    payload = protocol.CallPayload(
        call.op,
        call.target,
        call.blob if sent_blob else None,
        call.method,
        bytes(args.data) if one else protocol.packed(args),  # type: ignore[union-attr]
        call.init_args if sent_blob else None,
        call.source if sent_blob else None,
        call.stream,
        call.caller_modules,
    )
    if one:
        return [protocol.encode(protocol.CALL, call_id, protocol.dumps(tuple(payload)))]
    return protocol.encode_call(call_id, payload)
