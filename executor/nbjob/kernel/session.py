"""jupyter_client's ``Session`` without the date parsing nbjob does not need.

``Session.deserialize`` runs ``extract_dates`` over every message's header and parent header:
each string is matched against an ISO 8601 pattern and dates are parsed with dateutil — at
20,000 cells, 8.8 s of a 106 s run (issue 22). nbjob reads one date of a few messages per cell
(the execution metadata, ``nbjob.outputs.timestamp``, which parses the header's string itself),
so ``LeanSession`` leaves the dates as the strings the kernel sent; everything else (the
signature check, the replay guard, the buffers, the protocol adapter) is jupyter_client's.

The replay guard remembers the signatures of the last ``DIGESTS`` messages received, not 65,536
(jupyter_client's default: ~500 bytes a cell, ~10 MB by 16,000 cells, for a guard against a
message replayed on the kernel's own local sockets).
"""

from __future__ import annotations

from typing import Any

from jupyter_client.adapter import adapt
from jupyter_client.session import Session
from traitlets import Integer

DIGESTS = 4096


class LeanSession(Session):
    """A ``Session`` whose received headers keep their dates as strings."""

    digest_history_size = Integer(DIGESTS, help="signatures remembered (the replay guard)")

    def deserialize(self, msg_list: list[Any], content: bool = True, copy: bool = True) -> Any:
        """``Session.deserialize`` (jupyter_client 8) without ``extract_dates``."""
        if not copy:  # pyzmq did not copy the first parts
            msg_list = [bytes(m.bytes) for m in msg_list[:5]] + list(msg_list[5:])
        if self.auth is not None:
            self._check_signature(msg_list, content)
        if len(msg_list) < 5:
            raise TypeError("malformed message, must have at least 5 elements")
        header = self.unpack(msg_list[1])
        message: dict[str, Any] = {
            "header": header,
            "msg_id": header["msg_id"],
            "msg_type": header["msg_type"],
            "parent_header": self.unpack(msg_list[2]),
            "metadata": self.unpack(msg_list[3]),
            "content": self.unpack(msg_list[4]) if content else msg_list[4],
        }
        buffers = [memoryview(b) for b in msg_list[5:]]
        if buffers and buffers[0].shape is None:  # pyzmq #646: copy
            buffers = [memoryview(bytes(b.bytes)) for b in msg_list[5:]]
        message["buffers"] = buffers
        return adapt(message)

    def _check_signature(self, msg_list: list[Any], content: bool) -> None:
        from hmac import compare_digest

        signature = msg_list[0]
        if not signature:
            raise ValueError("Unsigned Message")
        if signature in self.digest_history:
            raise ValueError(f"Duplicate Signature: {signature!r}")
        if content:  # only a message read whole is remembered
            self._add_digest(signature)
        if not compare_digest(signature, self.sign(msg_list[1:5])):
            raise ValueError(f"Invalid Signature: {signature!r}")
