"""Transport: the array codec and the request protocol every widget speaks."""

from .codec import decode_array, encode_array
from .protocol import Cancelled, Context, Reply, RequestRouter, split_reply

__all__ = ["Cancelled", "Context", "Reply", "RequestRouter", "decode_array", "encode_array", "split_reply"]
