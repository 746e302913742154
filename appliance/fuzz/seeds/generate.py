#!/usr/bin/env python3
"""Regenerates the fuzz targets' seed corpora from real captures: the Zeek test pcaps
(../shared/pcaps/zeek beside the workspace) and the lab captures (tests/fixtures/lab).

Seeds are what each target reads: a UDP payload (dns, kerberos), one direction of a TCP stream
glued in sequence order (http, smb2, ldap, kerberos, rdp), an NTLMSSP message (ntlm), or a few
consecutive frames in the decode target's record format. They are kept small: the fuzzer only
needs the shapes, and they are committed. Files are named by their SHA-1, as libFuzzer names its
own, so running this again changes nothing; seeds added by hand (crash regressions) are kept.

    python3 appliance/fuzz/seeds/generate.py
"""

import hashlib
import struct
from pathlib import Path

SEEDS = Path(__file__).resolve().parent
ROOT = SEEDS.parents[2]
ZEEK = ROOT.parent / "shared" / "pcaps" / "zeek"
LAB = ROOT / "tests" / "fixtures" / "lab"

MAX_STREAM = 2048  # bytes of one stream direction
MAX_SEEDS = 12  # per target and kind


def records(path):
    """(timestamp in µs, frame) for each packet of a pcap or pcapng file."""
    data = path.read_bytes()
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        yield from pcapng_records(data)
        return
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}[magic]
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    at = 24
    while at + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[at:at + 16])
        frame = data[at + 16:at + 16 + caplen]
        at += 16 + caplen
        yield sec * 1_000_000 + (frac // 1000 if nanos else frac), frame


def pcapng_records(data):
    """Enhanced packet blocks, assuming microsecond timestamps (the default resolution)."""
    endian = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    at = 0
    while at + 12 <= len(data):
        kind, length = struct.unpack(endian + "II", data[at:at + 8])
        if kind == 6:
            high, low, caplen = struct.unpack(endian + "III", data[at + 12:at + 24])
            yield (high << 32) | low, data[at + 28:at + 28 + caplen]
        at += max(length, 12)


def transport(frame):
    """(proto, src, sport, dst, dport, seq, payload) of a TCP/UDP frame, else None."""
    ethertype, at = struct.unpack(">H", frame[12:14])[0], 14
    while ethertype in (0x8100, 0x88A8) and len(frame) >= at + 4:
        ethertype, at = struct.unpack(">H", frame[at + 2:at + 4])[0], at + 4
    if ethertype == 0x0800 and len(frame) >= at + 20:
        ihl = (frame[at] & 0x0F) * 4
        total = struct.unpack(">H", frame[at + 2:at + 4])[0]
        proto, src, dst = frame[at + 9], frame[at + 12:at + 16], frame[at + 16:at + 20]
        seg = frame[at + ihl:at + total]
    elif ethertype == 0x86DD and len(frame) >= at + 40:
        plen = struct.unpack(">H", frame[at + 4:at + 6])[0]
        proto, src, dst = frame[at + 6], frame[at + 8:at + 24], frame[at + 24:at + 40]
        seg = frame[at + 40:at + 40 + plen]
    else:
        return None
    if proto == 6 and len(seg) >= 20:
        sport, dport, seq = struct.unpack(">HHI", seg[:8])
        return ("tcp", src, sport, dst, dport, seq, seg[(seg[12] >> 4) * 4:])
    if proto == 17 and len(seg) >= 8:
        sport, dport = struct.unpack(">HH", seg[:4])
        return ("udp", src, sport, dst, dport, 0, seg[8:])
    return None


def packets(paths):
    for path in paths:
        if path.is_file():
            for _, frame in records(path):
                parsed = transport(frame)
                if parsed:
                    yield parsed


def datagrams(paths, port):
    return [p[6] for p in packets(paths) if p[0] == "udp" and port in (p[2], p[4]) and p[6]]


def tcp_streams(paths):
    """Each direction of each TCP connection (keyed by src, sport, dst, dport), in sequence
    order, retransmissions dropped; a gap ends the stream there."""
    glued, next_seq, broken = {}, {}, set()
    for proto, src, sport, dst, dport, seq, payload in packets(paths):
        if proto != "tcp" or not payload:
            continue
        key = (src, sport, dst, dport)
        if key in broken:
            continue
        expected = next_seq.get(key, seq)
        offset = (expected - seq) & 0xFFFFFFFF
        if offset >= 1 << 31:  # a gap: lost segments
            broken.add(key)
            continue
        payload = payload[offset:]
        glued[key] = glued.get(key, b"") + payload
        next_seq[key] = (seq + offset + len(payload)) & 0xFFFFFFFF
    return {key: s for key, s in glued.items() if s}


def streams(paths, port, to_server):
    """The client (or server) side of each connection to `port`."""
    return [s for (_, sport, _, dport), s in tcp_streams(paths).items()
            if (dport if to_server else sport) == port]


def heads(streams):
    return [s[:MAX_STREAM] for s in streams]


def cut(stream, frame_len):
    """The whole frames at the start of a stream, cut with `frame_len`."""
    out = []
    while (length := frame_len(stream)) and length <= len(stream):
        out.append(stream[:length])
        stream = stream[length:]
    return out


def netbios_len(buf):
    return 4 + int.from_bytes(buf[1:4], "big") if len(buf) >= 4 else None


def smb_kind(frame):
    """SMB2 (command, is response), or the protocol id of anything else."""
    if frame[4:8] == b"\xfeSMB" and len(frame) >= 24:
        return frame[16:18], frame[20] & 1
    return frame[4:8]


def ber_len(buf):
    if len(buf) < 2 or buf[0] != 0x30:
        return None
    if buf[1] < 0x80:
        return 2 + buf[1]
    count = buf[1] & 0x7F
    return 2 + count + int.from_bytes(buf[2:2 + count], "big") if 0 < count <= 4 else None


def rpc_len(buf):
    """The fragment length, in the byte order the data representation flag gives."""
    if len(buf) < 16:
        return None
    return int.from_bytes(buf[8:10], "little" if buf[4] & 0x10 else "big")


def ldap_kind(message):
    """The protocolOp tag: after the SEQUENCE header and the messageID INTEGER."""
    at = 2 + (message[1] & 0x7F if message[1] >= 0x80 else 0)
    at += 2 + message[at + 1] if len(message) > at + 1 else 0
    return message[at:at + 1]


def one_per_kind(messages, kind, limit=MAX_STREAM):
    """The shortest message of each kind, for the commands deep in a conversation."""
    best = {}
    for message in messages:
        if len(message) <= limit:
            key = kind(message)
            if key not in best or len(message) < len(best[key]):
                best[key] = message
    return list(best.values())


def ntlmssp(paths):
    out = []
    for p in packets(paths):
        at = p[6].find(b"NTLMSSP\x00")
        if at >= 0:
            out.append(p[6][at:at + 1024])
    return out


def capture_records(path, start, count):
    """`count` frames from `start` in the decode target's format: the link type's index (0,
    Ethernet), then [step][len u16 LE][frame], the step in 20 ms units as the target reads it."""
    out, last = b"\x00", None
    for i, (ts, frame) in enumerate(records(path)):
        if i < start:
            continue
        if i >= start + count:
            break
        step = 0 if last is None else min((ts - last) // 20_000, 0xFD) if ts >= last else 0xFF
        last = ts
        out += bytes([step]) + struct.pack("<H", len(frame)) + frame
    return out


def spread(items, limit=MAX_SEEDS):
    """Up to `limit` distinct items, evenly spaced over all of them (first seen order)."""
    unique = list(dict.fromkeys(items))
    if len(unique) <= limit:
        return unique
    return [unique[i * len(unique) // limit] for i in range(limit)]


def write(target, seeds):
    directory = SEEDS / target
    directory.mkdir(exist_ok=True)
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds))} bytes")


def main():
    lab = [LAB / "attack.pcap", LAB / "baseline.pcap", LAB / "benign-noise.pcap"]
    smb = [ZEEK / "smb" / "smb2.pcap", ZEEK / "smb" / "smb3.pcap"] + lab
    ldap = [ZEEK / "ldap" / "sasl-ntlm.pcap", ZEEK / "ldap" / "simpleauth.pcap"] + lab
    http = [ZEEK / "http" / "methods.pcap"] + lab
    krb = [ZEEK / "krb" / "kinit.pcap"]
    rdp = [ZEEK / "rdp" / "rdp-to-ssl.pcap"]
    # DCE/RPC on the dynamic port the endpoint mapper gave out: found by its first bytes.
    dcerpc = [ZEEK / "dce-rpc" / "dce_rpc_ntlm.pcapng"]

    write("dns", spread(datagrams([ZEEK / "dns53.pcap"] + lab, 53), 16))
    write("http_request", spread(heads(streams(http, 80, True))))
    write("http_response", spread(heads(streams(http, 80, False))))
    write("ntlm", spread(ntlmssp(smb + ldap + dcerpc), 16))
    smb_streams = streams(smb, 445, True) + streams(smb, 445, False)
    smb_frames = [f for s in smb_streams for f in cut(s, netbios_len)]
    write("smb2", spread(heads(smb_streams), 8) + one_per_kind(smb_frames, smb_kind))
    ldap_streams = streams(ldap, 389, True) + streams(ldap, 389, False)
    ldap_messages = [m for s in ldap_streams for m in cut(s, ber_len)]
    write("ldap", spread(heads(ldap_streams), 6) + one_per_kind(ldap_messages, ldap_kind))
    write("kerberos", spread(datagrams(krb, 88), 8)
          + spread(heads(streams(krb, 88, True)), 4) + spread(heads(streams(krb, 88, False)), 4))
    write("rdp", spread(heads(streams(rdp, 3389, True)), 4)
          + spread(heads(streams(rdp, 3389, False)), 4))
    rpc = [s for s in tcp_streams(dcerpc).values() if s.startswith(b"\x05\x00")]
    rpc_pdus = [p for s in rpc for p in cut(s, rpc_len)]
    write("dcerpc", spread(heads(rpc), 4) + spread(rpc_pdus, 8))
    # Windows over the lab attack (scans, ICMP unreachables, SMB, LDAP) and a few protocols.
    attack = LAB / "attack.pcap"
    total = sum(1 for _ in records(attack))
    windows = [capture_records(attack, i * total // 12, 8) for i in range(12)]
    windows += [capture_records(p, 0, 8) for p in [ZEEK / "dns53.pcap"] + krb + rdp + ldap[:1]]
    write("decode", [w for w in windows if len(w) > 1])


if __name__ == "__main__":
    main()
