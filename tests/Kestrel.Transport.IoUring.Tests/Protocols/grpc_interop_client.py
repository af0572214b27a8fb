"""A gRPC client outside .NET: grpcio (gRPC's C core, its own HTTP/2 stack) against the test service of GrpcTests.cs.

    /usr/bin/python3 grpc_interop_client.py HOST:PORT h2c|tls [CA.pem] EXPECTED_DOWNLOAD_SHA256

Calls every kind of method, checks each answer, prints one "ok <check>" line per check and exits 0, or prints what
went wrong and exits 1. Messages are raw bytes: no generated code on either side.
"""
import hashlib
import os
import struct
import sys

import grpc

SERVICE = "/iouring.test.Echo/"


def raw(method_kind, channel, name):
    return getattr(channel, method_kind)(SERVICE + name, request_serializer=None, response_deserializer=None)


def check(condition, what):
    if not condition:
        print(f"FAILED {what}", flush=True)
        sys.exit(1)
    print(f"ok {what}", flush=True)


def main():
    target, mode = sys.argv[1], sys.argv[2]
    if mode == "tls":
        with open(sys.argv[3], "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", "localhost")])
        expected_download = sys.argv[4]
    else:
        channel = grpc.insecure_channel(target)
        expected_download = sys.argv[3]
    timeout = 60

    # Unary: payloads from empty to 1 MiB, echoed byte for byte.
    echo = raw("unary_unary", channel, "Echo")
    for size in (0, 1, 16 * 1024, 100_000, 1024 * 1024):
        payload = os.urandom(size)
        check(echo(payload, timeout=timeout) == payload, f"unary echo of {size} bytes")

    # Server streaming: 200 messages of 32 KiB, hashed against what the server's generator makes.
    download = raw("unary_stream", channel, "Download")
    digest, count = hashlib.sha256(), 0
    call = download(struct.pack("<ii", 200, 32 * 1024), timeout=timeout)
    for message in call:
        digest.update(message)
        count += 1
    check(count == 200 and digest.hexdigest().upper() == expected_download, "server stream of 200 x 32 KiB, hashed")
    check(dict(call.trailing_metadata()).get("sent") == "200", "server stream trailers")

    # Client streaming: 300 messages of odd sizes, hashed by the server.
    upload = raw("stream_unary", channel, "Upload")
    sent = [os.urandom(16 * 1024 + i % 7 * 1031) for i in range(300)]
    reply = upload(iter(sent), timeout=timeout).decode("ascii")
    expected = f"{sum(map(len, sent))}:{hashlib.sha256(b''.join(sent)).hexdigest().upper()}"
    check(reply == expected, "client stream of 300 messages, hashed by the server")

    # Duplex: 200 messages out, the same 200 back in order.
    chat = raw("stream_stream", channel, "Chat")
    pings = [os.urandom(i % 50 * 100) for i in range(200)]
    check(list(chat(iter(pings), timeout=timeout)) == pings, "duplex stream of 200 messages echoed in order")

    # A status with detail and trailers.
    try:
        raw("unary_unary", channel, "Fail")(b"x", timeout=timeout)
        check(False, "Fail answers NOT_FOUND")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND and e.details() == "no such thing", "status NOT_FOUND with detail")
        check(dict(e.trailing_metadata()).get("failed-on-purpose") == "yes", "error trailers")

    # A deadline the handler does not meet.
    try:
        raw("unary_unary", channel, "Hang")(b"x", timeout=0.3)
        check(False, "Hang misses its deadline")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")

    # The client cancels an endless stream midway (RST_STREAM).
    endless = download(struct.pack("<ii", 2**31 - 1, 1024))
    for _ in range(50):
        next(endless)
    endless.cancel()
    try:
        for _ in endless:
            pass
        check(False, "a cancelled stream ends in CANCELLED")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.CANCELLED, "client cancel mid-stream")

    # None of that ended the connection's usefulness: one more call.
    check(echo(b"after", timeout=timeout) == b"after", "a call after the errors")
    channel.close()


if __name__ == "__main__":
    main()
