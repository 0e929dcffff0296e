"""The board-facing wrapper ``<top>_axi``: AXI4-Stream per model port, an AXI4-Lite register block.

:func:`axi_wrapper` lays the hardware IR's model ports out as a typed :class:`AxiWrapper`
(streams with their TDATA layout and beats per tensor, the register map); :func:`render_axi`
prints it through ``hw_templates/sv/axi_top.sv.j2``. The template decides nothing; this module
decides nothing about the design either: every width and count comes from the IR's stream types.
docs/board.md describes the result (TDATA bit layout, register map)::

    w = axi_wrapper(ir, top="top", top_text=top_sv)      # AxiWrapper
    render_axi(w).write(out / "rtl")                      # rtl/top_axi.sv

TDATA of one beat (byte-padded, padding zero on outputs, ignored on inputs):
MX stream ``TDATA[7:0]`` = the block's E8M0 scale, ``TDATA[8 + k*W +: W]`` = lane ``k``;
seed activation streams likewise (scale byte: nvfp4's UE4M3, Anda's S), an ``m2xfp4_a`` stream of ``L``
lanes then carries 2 metadata bits per subgroup of 8 lanes above the codes, ``TDATA[8 + L*W + g*2 +: 2]``;
plain (token-id) stream ``TDATA[k*W +: W]`` = lane ``k``.
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import masec
from masec.hw_templates.render import Rendered, render_template
from masec.hwir import HwGraph, StreamType

#: ``ID`` register: ASCII "MSEC".
MAGIC = 0x4D534543
#: Global registers end here; stream ``i`` (inputs first, then outputs) has its block at
#: ``STREAM_BASE + i * STREAM_STRIDE``.
STREAM_BASE = 0x40
STREAM_STRIDE = 0x20


@dataclass(frozen=True)
class AxisPort:
    """One AXI4-Stream interface of the wrapper and the top-level stream behind it."""
    name: str            # interface prefix: s_axis_<x> (slave, a model input) / m_axis_<y> (master, an output)
    core: str            # the top's stream prefix (s_<x> / m_<y>)
    direction: str       # "in" | "out"
    index: int           # position among the inputs or among the outputs
    node: str            # the model's node
    mx: bool             # carries an E8M0 scale byte
    lanes: int
    element_bits: int
    data_bits: int       # TDATA bits above the scale byte: lanes * element_bits (+ M2XFP's metadata bits)
    tdata_bits: int      # (scale byte +) data bits, rounded up to whole bytes
    beats: int           # beats per tensor (TLAST on the last)
    beat_bits: int       # width of the beat-in-tensor counter
    rows: int            # product of the leading dimensions
    row_len: int         # elements per row (last dimension)
    block: int           # MX block size (0 on a plain stream)
    fmt: str             # e.g. "mxint8/B32", "int9"
    kind: int            # stream format code (mx_quantize's QFMT): 0 MX or plain, 1 m2xfp4_a, 2 nvfp4, 3 anda
    base: int            # byte address of the stream's register block
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Register:
    """One 32-bit AXI4-Lite register. ``kind`` names what the template reads or writes there."""
    addr: int
    name: str
    access: str          # "RO", "RW", "RW1C"
    kind: str            # const | control | status | in_count | done_count | count | flags
    value: int           # the constant (kind "const") or the reset value
    stream: str          # the stream a per-stream register belongs to ("" for global ones)
    description: str


@dataclass(frozen=True)
class AxiWrapper:
    module: str          # <top>_axi
    core: str            # the wrapped top module
    addr_bits: int       # AXI4-Lite address width (byte addresses)
    inputs: tuple[AxisPort, ...]
    outputs: tuple[AxisPort, ...]
    registers: tuple[Register, ...]

    @property
    def streams(self) -> tuple[AxisPort, ...]:
        return self.inputs + self.outputs

    def to_json(self) -> dict:
        """The facts a driver needs (written into masec_build.json under ``axi``)."""
        return {"top": self.module, "source": f"rtl/{self.module}.sv", "addr_bits": self.addr_bits,
                "streams": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()
                             if k not in ("beat_bits",)} for s in self.streams],
                "registers": [{"addr": f"0x{r.addr:02x}", "name": r.name, "access": r.access,
                               **({"value": r.value} if r.kind == "const" else {"reset": r.value}),
                               "description": r.description} for r in self.registers]}


def _version_word(version: str) -> int:
    nums = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in version.split(".")[:3]]
    nums += [0] * (3 - len(nums))
    return (nums[0] & 0xFF) << 16 | (nums[1] & 0xFF) << 8 | (nums[2] & 0xFF)


def _port(inst, t: StreamType, direction: str, index: int, base: int) -> AxisPort:
    core = inst.params["port"]
    name = ("s_axis_" if direction == "in" else "m_axis_") + core.split("_", 1)[1]
    data_bits = t.data_bits
    payload = data_bits + (8 if t.is_mx else 0)
    shape = tuple(int(d) for d in t.shape)
    kind = 0
    if t.is_mx:
        from masec.hw_templates.kernels.mx_quantize import output_format_params
        kind = int(output_format_params(t.fmt.parse())[0])
    return AxisPort(name=name, core=core, direction=direction, index=index, node=inst.node, mx=t.is_mx,
                    lanes=t.lanes, element_bits=t.element_bits, data_bits=data_bits,
                    tdata_bits=8 * -(-payload // 8), beats=t.beats, beat_bits=max(1, (t.beats - 1).bit_length()),
                    rows=t.rows, row_len=shape[-1] if shape else 1, block=t.fmt.block_size if t.is_mx else 0,
                    fmt=f"{t.fmt.name}/B{t.fmt.block_size}" if t.is_mx else f"int{t.int_bits}", kind=kind, base=base,
                    shape=shape)


def axi_wrapper(ir: HwGraph, top: str, top_text: str) -> AxiWrapper:
    """The wrapper of top module ``top`` (its printed text ``top_text`` gives the DESIGN word)."""
    base = STREAM_BASE
    ins, outs = [], []
    for k, inst in enumerate(ir.inputs):
        ins.append(_port(inst, inst.out_types[0], "in", k, base))
        base += STREAM_STRIDE
    for k, inst in enumerate(ir.outputs):
        outs.append(_port(inst, inst.in_types[0], "out", k, base))
        base += STREAM_STRIDE
    crc = zlib.crc32(top_text.encode())
    regs = [
        Register(0x00, "ID", "RO", "const", MAGIC, "", 'magic number, ASCII "MSEC"'),
        Register(0x04, "VERSION", "RO", "const", _version_word(masec.__version__), "",
                 f"masec version that printed the design ({masec.__version__}): major<<16 | minor<<8 | patch"),
        Register(0x08, "DESIGN", "RO", "const", crc, "", f"CRC-32 of rtl/{top}.sv: identifies the compiled design"),
        Register(0x0C, "PORTS", "RO", "const", len(ins) | len(outs) << 8, "",
                 "[7:0] number of input streams, [15:8] number of output streams"),
        Register(0x10, "CONTROL", "RW", "control", 1, "",
                 "bit 0 enable (streams move only while set; reset value 1); bit 1 soft reset "
                 "(write 1: resets the core, the counters and the error flags for one cycle; reads 0)"),
        Register(0x14, "STATUS", "RO", "status", 0b100, "",
                 "bit 0 busy (an inference is in flight); bit 1 error (a TLAST error flag is set on some input); "
                 "bit 2 enabled"),
        Register(0x18, "IN_COUNT", "RO", "in_count", 0, "",
                 "inferences whose every input tensor has been received"),
        Register(0x1C, "DONE_COUNT", "RO", "done_count", 0, "",
                 "inferences whose every output tensor has been sent"),
    ]
    for s in ins + outs:
        what = f"{'input' if s.direction == 'in' else 'output'} {s.name} ({s.node}, {s.fmt} {s.shape})"
        regs += [
            Register(s.base + 0x00, f"{s.name.upper()}_BEATS", "RO", "const", s.beats, s.name,
                     f"{what}: beats per tensor"),
            Register(s.base + 0x04, f"{s.name.upper()}_COUNT", "RO", "count", 0, s.name,
                     f"{what}: beats transferred since reset (wraps)"),
            Register(s.base + 0x08, f"{s.name.upper()}_FLAGS", "RW1C" if s.direction == "in" else "RO",
                     "flags" if s.direction == "in" else "const", 0, s.name,
                     f"{what}: bit 0 TLAST error (TLAST differed from the last-beat-of-tensor position; "
                     f"write 1 to clear)" if s.direction == "in" else f"{what}: 0 (no flags on an output)"),
            Register(s.base + 0x0C, f"{s.name.upper()}_FORMAT", "RO", "const",
                     s.lanes | s.element_bits << 8 | int(s.mx) << 16 | s.kind << 17 | (s.tdata_bits // 8) << 24,
                     s.name,
                     f"{what}: [7:0] lanes, [15:8] element bits, [16] MX (TDATA[7:0] is the scale), "
                     f"[19:17] stream format (0 MX or plain, 1 m2xfp4_a, 2 nvfp4, 3 anda), [31:24] TDATA bytes"),
            Register(s.base + 0x10, f"{s.name.upper()}_ROWS", "RO", "const", s.rows, s.name,
                     f"{what}: rows (product of the leading dimensions)"),
            Register(s.base + 0x14, f"{s.name.upper()}_ROW_LEN", "RO", "const", s.row_len, s.name,
                     f"{what}: elements per row (last dimension)"),
            Register(s.base + 0x18, f"{s.name.upper()}_BLOCK", "RO", "const", s.block, s.name,
                     f"{what}: MX block size (0: plain stream)"),
            Register(s.base + 0x1C, f"{s.name.upper()}_DATA_BITS", "RO", "const", s.data_bits, s.name,
                     f"{what}: TDATA bits of data above the scale byte (lanes x element bits; m2xfp4_a: plus "
                     f"2 metadata bits per 8 lanes)"),
        ]
    addr_bits = max(4, (base - 1).bit_length())
    return AxiWrapper(module=f"{top}_axi", core=top, addr_bits=addr_bits, inputs=tuple(ins), outputs=tuple(outs),
                      registers=tuple(regs))


def render_axi(w: AxiWrapper) -> Rendered:
    """Print the wrapper through ``hw_templates/sv/axi_top.sv.j2``."""
    return render_template("axi_top.sv.j2", w.module, w=w)


def tdata_words(s: AxisPort, beats: list[list[int]]) -> list[int]:
    """TDATA of each reference beat (``[data]`` or ``[data, scale]``) on stream ``s``."""
    return [(b[0] << 8 | b[1]) if s.mx else b[0] for b in beats]


def write_axi_tb(w: AxiWrapper, vectors, folder) -> list[str]:
    """The SystemVerilog testbench ``<top>_axi_tb`` and its ``<stream>.hex`` beat files in ``folder``
    (the beats of ``vectors``, a :class:`masec.sim.vectors.VectorFile`); returns the file names."""
    from pathlib import Path

    folder = Path(folder)
    names = []
    for s in w.streams:
        beats = (vectors.inputs if s.direction == "in" else vectors.outputs)[s.core].beats
        digits = -(-s.tdata_bits // 4)
        (folder / f"{s.name}.hex").write_text("".join(f"{v:0{digits}x}\n" for v in tdata_words(s, beats)))
        names.append(f"{s.name}.hex")
    longest = max([vectors.ideal_cycles] + [s.beats for s in w.streams])
    tb = render_template("axi_tb.sv.j2", f"{w.module}_tb", w=w, seed=vectors.seed,
                         gap_percent=round(100 * vectors.gap_prob), stall_percent=round(100 * vectors.stall_prob),
                         timeout=50 * longest + 5000)
    tb.write(folder)
    return [f"{tb.module}.sv", *names]
