#!/usr/bin/env python3
"""LLMNR (RFC 4795) as a Windows host speaks it, for tests/tests/local_names.rs; no packaged
tool on Debian answers or asks LLMNR without systemd-resolved taking over the machine.

  llmnr.py respond NAME ADDRESS   answer A questions for NAME with ADDRESS, until killed
  llmnr.py query NAME SOURCE      ask the link once from SOURCE; print the answer, exit 1 if none
"""
import socket
import struct
import sys

GROUP, PORT = "224.0.0.252", 5355
TYPE_A, CLASS_IN = 1, 1


def encode(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"


def question(message):
    """The transaction id, name, type and end of a message's only question, or None."""
    if len(message) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", message[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, pos = [], 12
    while pos < len(message) and message[pos]:
        end = pos + 1 + message[pos]
        labels.append(message[pos + 1 : end].decode(errors="replace"))
        pos = end
    if pos + 5 > len(message):
        return None
    qtype = struct.unpack("!H", message[pos + 1 : pos + 3])[0]
    return ident, ".".join(labels), qtype, pos + 5


def respond(name, address):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", PORT))
    membership = socket.inet_aton(GROUP) + socket.inet_aton(address)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    print("listening", flush=True)
    while True:
        message, peer = sock.recvfrom(512)
        asked = question(message)
        if not asked or asked[1].lower() != name.lower() or asked[2] != TYPE_A:
            continue
        ident, _, _, end = asked
        header = struct.pack("!HHHHHH", ident, 0x8000, 1, 1, 0, 0)
        answer = b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, 30, 4)
        sock.sendto(header + message[12:end] + answer + socket.inet_aton(address), peer)


def query(name, source):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
    # RFC 4795 §2.5: link-scope, TTL 1.
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.bind((source, 0))
    sock.settimeout(3)
    message = struct.pack("!HHHHHH", 0x4C4C, 0, 1, 0, 0, 0)
    sock.sendto(message + encode(name) + struct.pack("!HH", TYPE_A, CLASS_IN), (GROUP, PORT))
    try:
        answer, _ = sock.recvfrom(512)
    except socket.timeout:
        return 1
    print(socket.inet_ntoa(answer[-4:]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "respond":
        respond(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "query":
        sys.exit(query(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
