#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/: a few small, meaningful inputs per
target in each harness's input format (documented at the top of fuzz_targets/<target>.rs).

Re-run after changing a harness's format: python3 fuzz/gen_corpus.py
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- nvme_commands -------------------------------------------------------------------------
# ops: 0 reg write, 1 bar write, 2 bar read, 3 raw sqe, 4 compact sqe, 5 sq doorbell,
# 6 cq doorbell, 7 process, 8 memory write, 9 fail next, 10 remap, 11 ring + process.
def sqe(qid, slot, opcode, nsid=0, prp1=0, prp2=0, cdw10=0, cdw11=0, cdw12=0, cdw13=0, flags=0):
    return (u8(4) + u8(qid) + u8(slot) + u8(opcode) + u8(flags) + u32(nsid) + u32(prp1)
            + u32(prp2) + u32(cdw10) + u32(cdw11) + u32(cdw12) + u32(cdw13))


def ring(qid, tail):
    return u8(11) + u8(qid) + u8(tail)


def mem(addr, data):
    return u8(8) + u32(addr) + u8(len(data)) + data


def reg(index, value):
    return u8(0) + u8(index) + u32(value)


DATA, LIST = 0x10000, 0xE000
nvme = "nvme_commands"
write(nvme, "read_4k", u8(3) + sqe(1, 0, 0x02, 1, DATA, 0, 0, 0, 7) + ring(1, 1) + u8(6) + u16(1) + u16(1))
write(nvme, "write_16k_prp_list", u8(3) + mem(LIST, u64(0x11000) + u64(0x12000) + u64(0x13000))
      + sqe(1, 0, 0x01, 1, DATA, LIST, 8, 0, 31) + ring(1, 1))
write(nvme, "identify_controller", u8(1) + sqe(0, 0, 0x06, 0, DATA, 0, 1) + ring(0, 1)
      + sqe(0, 1, 0x06, 1, DATA, 0, 0) + ring(0, 2))
# Bring-up by hand: AQA, ASQ, ACQ, CC.EN with 64/16-byte entries; read CSTS.
write(nvme, "manual_enable", u8(0) + reg(7, 15 | (15 << 16)) + reg(8, 0x1000) + reg(10, 0x2000)
      + reg(5, 1 | (6 << 16) | (4 << 20)) + u8(2) + u16(0x1C) + u8(2))
write(nvme, "deallocate_and_flush", u8(3) + mem(0xF000, u32(0) + u32(8) + u64(16))
      + sqe(1, 0, 0x09, 1, 0xF000, 0, 0, 4) + sqe(1, 1, 0x00, 1) + ring(1, 2))
write(nvme, "queues_features_logs", u8(1)
      + sqe(0, 0, 0x05, 0, 0xA000, 0, 2 | (15 << 16), 3 | (1 << 16))   # CQ 2, vector 1
      + sqe(0, 1, 0x01, 0, 0x8000, 0, 2 | (15 << 16), 1 | (2 << 16))   # SQ 2 on CQ 2
      + sqe(0, 2, 0x09, 0, 0, 0, 0x07, 3 | (3 << 16))                  # number of queues
      + sqe(0, 3, 0x02, 0xFFFFFFFF, DATA, 0, 0x01 | (127 << 16))      # SMART log
      + sqe(0, 4, 0x0C) + sqe(0, 5, 0x08, 0, 0, 0, 2 | (7 << 16))      # AER, abort
      + sqe(0, 6, 0x00, 0, 0, 0, 2) + sqe(0, 7, 0x04, 0, 0, 0, 2)      # delete SQ 2, CQ 2
      + ring(0, 8))
write(nvme, "engine_error_and_remap", u8(3) + u8(9) + u8(4) + sqe(1, 0, 0x02, 1, DATA, 0, 0, 0, 0)
      + ring(1, 1) + u8(10) + u8(8) + u8(1) + sqe(1, 1, 0x01, 1, 0x8000, 0, 0, 0, 15)
      + ring(1, 2) + reg(5, 0))
write(nvme, "doorbell_through_bar", u8(3) + sqe(1, 0, 0x08, 1, 0, 0, 0, 0, 3)
      + u8(1) + u16(0x1008) + u8(2) + u32(1) + u8(7) + u8(1) + u16(0x100C) + u8(2) + u32(1))

# ---- virtio_blk_chains ---------------------------------------------------------------------
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4


def desc(addr, length, flags, nxt=0):
    return u64(addr) + u32(length) + u16(flags) + u16(nxt)


def image(parts, size=0x5000):
    buf = bytearray(size)
    for at, data in parts:
        buf[at:at + len(data)] = data
    return bytes(buf).rstrip(b"\0")


def header(kind, sector):
    return u32(kind) + u32(0) + u64(sector)


def direct(table, size, head, flags, sectors, img):
    return u8(0) + u16(table) + u16(size) + u16(head) + u8(flags) + u16(sectors) + u8(0) + u8(0) + img


blk = "virtio_blk_chains"
three = lambda kind, data_flags, dlen=512: [(0, desc(0x1000, 16, F_NEXT, 1) + desc(0x2000, dlen, F_NEXT | data_flags, 2)
                                             + desc(0x3000, 1, F_WRITE)), (0x1000, header(kind, 8))]
write(blk, "read", direct(0, 8, 0, 0, 2048, image(three(0, F_WRITE))))
write(blk, "write", direct(0, 8, 0, 0, 2048, image(three(1, 0, 1024))))
write(blk, "write_read_only", direct(0, 8, 0, 1, 2048, image(three(1, 0))))
write(blk, "get_id", direct(0, 8, 0, 0, 2048, image(three(8, F_WRITE, 20))))
write(blk, "flush", direct(0, 8, 0, 0, 2048, image([(0, desc(0x1000, 16, F_NEXT, 1) + desc(0x3000, 1, F_WRITE)),
                                                    (0x1000, header(4, 0))])))
write(blk, "discard_two_ranges", direct(0, 8, 0, 0, 2048, image([
    (0, desc(0x1000, 16, F_NEXT, 1) + desc(0x2000, 32, F_NEXT, 2) + desc(0x3000, 1, F_WRITE)),
    (0x1000, header(11, 0)), (0x2000, u64(0) + u32(8) + u32(0) + u64(64) + u32(8) + u32(0))])))
write(blk, "write_zeroes_unmap", direct(0, 8, 0, 0, 2048, image([
    (0, desc(0x1000, 16, F_NEXT, 1) + desc(0x2000, 16, F_NEXT, 2) + desc(0x3000, 1, F_WRITE)),
    (0x1000, header(13, 0)), (0x2000, u64(0) + u32(8) + u32(1))])))
write(blk, "indirect_read", direct(0, 4, 0, 0, 2048, image([
    (0, desc(0x800, 48, F_INDIRECT)),
    (0x800, desc(0x1000, 16, F_NEXT, 1) + desc(0x2000, 4096, F_NEXT | F_WRITE, 2) + desc(0x3000, 1, F_WRITE)),
    (0x1000, header(0, 0))])))
write(blk, "loop", direct(0, 4, 0, 0, 2048, image([(0, desc(0x1000, 16, F_NEXT, 1) + desc(0x2000, 16, F_NEXT, 0))])))


def ring_image(chains):
    """Descriptor table at 0, avail ring at 0x1000, used ring at 0x2000, 8 entries."""
    parts = [(0, b"".join(chains[0]))]
    heads = chains[1]
    parts.append((0x1000, u16(0) + u16(len(heads)) + b"".join(u16(h) for h in heads)))
    return parts


def queue(flags, sectors, parts):
    return u8(1) + u8(3) + u16(0) + u16(0x1000) + u16(0x2000) + u8(flags) + u16(sectors) + image(parts)


read_write = ([desc(0x4000, 16, F_NEXT, 1), desc(0x5000, 512, F_NEXT | F_WRITE, 2), desc(0x6000, 1, F_WRITE),
               desc(0x4010, 16, F_NEXT, 4), desc(0x5200, 1024, F_NEXT, 5), desc(0x6001, 1, F_WRITE)], [0, 3])
write(blk, "queue_read_write", queue(0, 2048, ring_image(read_write) + [(0x4000, header(0, 0) + header(1, 16))]))
write(blk, "queue_event_idx_writethrough", queue(4, 2048, ring_image(read_write) + [(0x4000, header(0, 0) + header(1, 16))]))
write(blk, "queue_bad_head", queue(0, 64, [(0x1000, u16(0) + u16(3) + u16(9) + u16(0) + u16(0xFFFF))]))

# ---- vhost-user frames (shared by vhost_user_messages and vfio_user_messages) ---------------
def send(data, fds=0, memfd=False, kick=False):
    ctl = fds | (4 if memfd else 0) | (0x40 if kick else 0)
    return u8(ctl) + u16(len(data)) + data


def memory(offset, data):
    body = u32(offset) + data
    return u8(0x80) + u16(len(body)) + body


def vu(req, payload=b"", flags=0x1):
    return u32(req) + u32(flags) + u32(len(payload)) + payload


UA = 0x7F00_0000_0000  # where the "frontend" has guest memory mapped
V1, PROTO = 1 << 32, 1 << 30
vh = "vhost_user_messages"
handshake = (send(vu(3)) + send(vu(1)) + send(vu(15)) + send(vu(2, u64(V1 | PROTO)))
             + send(vu(16, u64((1 << 0) | (1 << 9)))) + send(vu(17))
             + send(vu(24, u32(0) + u32(60) + u32(0) + bytes(60))))
write(vh, "handshake_and_config", handshake)
setup = (send(vu(3)) + send(vu(2, u64(V1 | PROTO))) + send(vu(16, u64((1 << 0) | (1 << 9))))
         + send(vu(5, u32(1) + u32(0) + u64(0) + u64(1 << 20) + u64(UA) + u64(0)), fds=1, memfd=True)
         + send(vu(8, u32(0) + u32(8))) + send(vu(9, u32(0) + u32(0) + u64(UA) + u64(UA + 0x2000) + u64(UA + 0x1000) + u64(0)))
         + send(vu(10, u32(0) + u32(0))) + send(vu(13, u64(0)), fds=1) + send(vu(12, u64(0)), fds=1)
         + send(vu(18, u32(0) + u32(1))))
chain = (memory(0, desc(0x4000, 16, F_NEXT, 1) + desc(0x5000, 512, F_NEXT | F_WRITE, 2) + desc(0x6000, 1, F_WRITE))
         + memory(0x1000, u16(0) + u16(1) + u16(0)) + memory(0x4000, header(0, 0)))
write(vh, "read_one_sector", chain + setup + send(b"", kick=True) + send(vu(11, u32(0) + u32(0))))
write(vh, "set_config_wce", send(vu(3)) + send(vu(25, u32(20) + u32(1) + u32(0) + b"\0")) + send(vu(24, u32(0) + u32(60) + u32(0) + bytes(60))))
write(vh, "bad_message_size", send(vu(1) [:8] + u32(0x10000)) + send(vu(5, u32(9) + u32(0)), fds=1, memfd=True))

# ---- vfio-user ----------------------------------------------------------------------------
def fu(msg_id, cmd, payload=b"", flags=0):
    return u16(msg_id) + u16(cmd) + u32(16 + len(payload)) + u32(flags) + u32(0) + payload


CAPS = b'{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576}}\0'
vf = "vfio_user_messages"
version = send(fu(1, 1, u16(0) + u16(2) + CAPS))
write(vf, "version_and_info", version + send(fu(2, 4, u32(16) + u32(0) + u32(0) + u32(0)))
      + send(fu(3, 5, u32(32) + bytes(28))) + send(fu(4, 5, u32(32) + u32(0) + u32(0) + bytes(20)))
      + send(fu(5, 7, u32(16) + u32(2) + u32(0) + u32(0))))


def region_write(mid, region, offset, data):
    return send(fu(mid, 10, u64(offset) + u32(region) + u32(len(data)) + data))


def region_read(mid, region, offset, count):
    return send(fu(mid, 9, u64(offset) + u32(region) + u32(count)))


dma_map = send(fu(6, 2, u32(32) + u32(3) + u64(0) + u64(0) + u64(1 << 20)), fds=1, memfd=True)
identify = bytes([0x06, 0, 1, 0]) + bytes(20) + u64(0x10000) + u64(0) + u32(1) + bytes(20)
write(vf, "enable_and_identify", version + dma_map
      + region_write(7, 0, 0x24, u32(15 | (15 << 16))) + region_write(8, 0, 0x28, u64(0x1000))
      + region_write(9, 0, 0x30, u64(0x2000)) + region_write(10, 0, 0x14, u32(1 | (6 << 16) | (4 << 20)))
      + region_read(11, 0, 0x1C, 4) + memory(0x1000, identify) + region_write(12, 0, 0x1000, u32(1))
      + region_read(13, 0, 0x1C, 4) + send(fu(14, 3, u32(24) + u32(0) + u64(0) + u64(1 << 20))))
write(vf, "irqs_config_reset", version
      + send(fu(2, 8, u32(20) + u32((1 << 2) | (1 << 5)) + u32(2) + u32(0) + u32(1)), fds=1)
      + region_read(3, 7, 0, 64) + region_write(4, 7, 4, u16(0x6)) + region_read(5, 4, 0, 16)
      + send(fu(6, 13)))
write(vf, "unknown_and_short", send(fu(1, 99)) + send(u16(1) + u16(4) + u32(8)))

# ---- bench_mailbox -------------------------------------------------------------------------
LAT = 39  # 8-byte slot of latency.counts[0] in the mailbox image; min and max follow the 720 counts
mb = "bench_mailbox"
params = lambda q: u64(struct.unpack("<Q", struct.pack("<d", q))[0]) + u64(1 << 30) + u8(12) + u64(42) + u8(0)
slots = lambda pairs: b"".join(u16(s) + u64(v) for s, v in pairs)
write(mb, "latencies", params(0.99) + slots([(LAT + 100, 5), (LAT + 200, 90), (LAT + 300, 5), (LAT + 720, 1000), (LAT + 721, 900000)]))
write(mb, "empty_histogram", params(0.5))
write(mb, "short_image", params(0.5)[:-1] + u8(8))
write(mb, "job_fields", params(1.0) + slots([(0, 0x4D504F49 | (2 << 32)), (1, 2), (3, 7), (6, 1 | (4 << 32)), (11, 2 | (3 << 32))]))

# ---- disk_config ---------------------------------------------------------------------------
dc = "disk_config"
for i, s in enumerate(["path=/tmp/x.img,direct=on,iface=nvme", "null=64M", "null",
                       "socket=/run/blk.sock,queues=2,queue_size=256", "file,direct,ro:/dev/nvme0n1",
                       "null:1G", "null:4096", "path=a,readonly=off", "null=1T,iface=vhost-user",
                       "file,ro:a:b,c"]):
    write(dc, "spec%02d" % i, s.encode())


# ---- virtio_net_chains ---------------------------------------------------------------------
net = "virtio_net_chains"
eth = b"\x02\0\0\0\0\x99" + b"\x52\x54\0\x12\x34\x56" + b"\x88\xb5" + bytes(range(60))
vnet = bytes(12)
write(net, "tx_two_descs", u8(0) + u16(0) + u16(8) + u16(0) + u16(1530) + u8(0)
      + image([(0, desc(0x1000, 12, F_NEXT, 1) + desc(0x2000, len(eth), 0)), (0x1000, vnet), (0x2000, eth)]))
write(net, "rx_one_desc", u8(0) + u16(0) + u16(8) + u16(0) + u16(1530) + u8(0)
      + image([(0, desc(0x1000, 2048, F_WRITE))]))


def ring_at(base):
    return u16(base) + u16(base + 0x100) + u16(base + 0x200)


def avail(heads):
    return u16(0) + u16(len(heads)) + b"".join(u16(h) for h in heads)


def pair(bits, parts):
    return u8(1) + u8(3) + ring_at(0x1000) + ring_at(0x2000) + ring_at(0x3000) + u8(bits) + image(parts, 0x8000)


rx_bufs = [(0x1000, b"".join(desc(0x6000 + 0x200 * i, 0x200, F_WRITE) for i in range(4))), (0x1100, avail([0, 1, 2, 3]))]
tx_frame = [(0x2000, desc(0x5000, 12 + len(eth), 0)), (0x2100, avail([0])), (0x5000, vnet + eth)]
write(net, "reflect_mergeable", pair(0b1111, rx_bufs + tx_frame))
write(net, "reflect_plain", pair(0, rx_bufs + tx_frame))
ctrl = [(0x3000, desc(0x4000, 4, F_NEXT, 1) + desc(0x4010, 1, F_WRITE)), (0x3100, avail([0])), (0x4000, b"\x04\x00\x02\x00")]
write(net, "ctrl_mq_pairs", pair(0, ctrl))
