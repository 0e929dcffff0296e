"""The one registry of FPGA parts masec targets: device resources, the Yosys family, the P&R flags.

Each part is known by its full ordering string (the one Vivado takes) and by its short device
name; both resolve to the same :class:`Part`::

    >>> lookup_part("xcu250").lut, lookup_part("xcu250-figd2104-2L-e").dsp
    (1728000, 12288)

Figures are whole-device totals from AMD's product tables (a platform shell on an Alveo card
takes its share; budgets are fractions of these totals):

* xc7z020: DS190, *Zynq-7000 SoC Data Sheet: Overview*, table "Zynq-7000 SoC Family" (Z-7020).
* xczu3eg, xczu9eg: DS891, *Zynq UltraScale+ MPSoC Data Sheet: Overview*, "EG devices" table.
* xcvu9p and the Virtex UltraScale+ dies under the Alveo cards: DS890, *UltraScale Architecture
  and Product Data Sheet: Overview*, "Virtex UltraScale+ FPGA Feature Summary" (U50 = VU35P die,
  U250 = VU13P, U280 = VU37P; the card data sheets DS965 / DS962 / DS963 round the same figures
  to thousands).

* Lattice ECP5 (LFE5U-25F/45F/85F, speed grade 6, 381-ball caBGA): FPGA-DS-02012, *ECP5 and
  ECP5-5G Family Data Sheet*, table 1.1 "ECP5 and ECP5-5G Family Selection Guide" (sysMEM blocks,
  18x18 multipliers); the exact LUT4 counts are the device databases' (Project Trellis, as
  nextpnr-ecp5 reports them: 24,288 / 43,848 / 83,640; the data sheet rounds to 24K / 44K / 84K).
  Every slice pairs two LUT4s with two flip-flops, so FF = LUT.

``bram36`` counts block RAMs: 36 Kb RAMB36 on Xilinx (a RAMB18 is half of one), 18 Kb DP16KD
(EBR) on ECP5 (``bram_kbits`` says which); ``uram`` counts 288 Kb UltraRAMs. ``dsp`` counts
DSP48E1/E2 slices on Xilinx, MULT18X18D multipliers on ECP5. ``lut`` counts 6-input LUTs on
Xilinx, 4-input LUTs on ECP5.
"""
from __future__ import annotations

from dataclasses import dataclass

from masec.errors import MasecError

#: Resource keys of a design total, in report order.
RESOURCES = ("LUT", "FF", "DSP", "BRAM")


@dataclass(frozen=True)
class Part:
    name: str          # short device name: xcu250
    part: str          # full ordering string: xcu250-figd2104-2L-e
    family: str        # xc7 (7 series), xcup (UltraScale+): Yosys synth_xilinx -family; ecp5: synth_ecp5
    lut: int           # LUTs (6-input on Xilinx, 4-input on ECP5)
    ff: int            # flip-flops
    dsp: int           # DSP48E1 (xc7) / DSP48E2 (xcup) slices; MULT18X18D (ecp5)
    bram36: int        # block RAMs: 36 Kb RAMB36 (Xilinx), 18 Kb DP16KD (ECP5)
    uram: int = 0      # 288 Kb UltraRAMs
    vendor: str = "xilinx"          # xilinx | lattice
    bram_kbits: int = 36            # size of one counted block RAM
    pnr_args: tuple[str, ...] = ()  # nextpnr device flags (ECP5): --85k --package CABGA381 --speed 6

    @property
    def is_ecp5(self) -> bool:
        return self.family == "ecp5"

    def capacity(self) -> dict[str, int]:
        """The device's totals under the design-total keys (LUT, FF, DSP, BRAM)."""
        return {"LUT": self.lut, "FF": self.ff, "DSP": self.dsp, "BRAM": self.bram36}


PARTS: dict[str, Part] = {p.name: p for p in (
    Part("xc7z020", "xc7z020clg400-1", "xc7", lut=53_200, ff=106_400, dsp=220, bram36=140),
    Part("xczu3eg", "xczu3eg-sbva484-1-e", "xcup", lut=70_560, ff=141_120, dsp=360, bram36=216),
    Part("xczu9eg", "xczu9eg-ffvb1156-2-e", "xcup", lut=274_080, ff=548_160, dsp=2_520, bram36=912),
    Part("xcu50", "xcu50-fsvh2104-2-e", "xcup", lut=871_680, ff=1_743_360, dsp=5_952, bram36=1_344, uram=640),
    Part("xcu250", "xcu250-figd2104-2L-e", "xcup", lut=1_728_000, ff=3_456_000, dsp=12_288, bram36=2_688,
         uram=1_280),
    Part("xcu280", "xcu280-fsvh2892-2L-e", "xcup", lut=1_303_680, ff=2_607_360, dsp=9_024, bram36=2_016,
         uram=960),
    Part("xcvu9p", "xcvu9p-flga2104-2L-e", "xcup", lut=1_182_240, ff=2_364_480, dsp=6_840, bram36=2_160,
         uram=960),
    Part("lfe5u-25f", "LFE5U-25F-6BG381C", "ecp5", lut=24_288, ff=24_288, dsp=28, bram36=56, vendor="lattice",
         bram_kbits=18, pnr_args=("--25k", "--package", "CABGA381", "--speed", "6")),
    Part("lfe5u-45f", "LFE5U-45F-6BG381C", "ecp5", lut=43_848, ff=43_848, dsp=72, bram36=108, vendor="lattice",
         bram_kbits=18, pnr_args=("--45k", "--package", "CABGA381", "--speed", "6")),
    Part("lfe5u-85f", "LFE5U-85F-6BG381C", "ecp5", lut=83_640, ff=83_640, dsp=156, bram36=208, vendor="lattice",
         bram_kbits=18, pnr_args=("--85k", "--package", "CABGA381", "--speed", "6")),
)}


def known_parts() -> list[str]:
    """The short names, in registry order."""
    return list(PARTS)


def lookup_part(name: str) -> Part:
    """The part called ``name`` (short name or full ordering string, any case).

    An unknown name raises :class:`MasecError` with one line that lists the known parts.
    """
    key = str(name).strip().lower()
    for p in PARTS.values():
        if key in (p.name, p.part.lower()):
            return p
    known = ", ".join(f"{p.name} ({p.part})" for p in PARTS.values())
    raise MasecError(f"unknown FPGA part {name!r}; known parts: {known}")


def fits(resources: dict, part: Part | str) -> dict:
    """Utilization of ``part`` by ``resources`` ({"LUT", "FF", "DSP", "BRAM"}, missing keys = 0).

    Returns ``{"part", "utilization": {key: fraction}, "fits": bool, "limiting": key}``, where
    ``fits`` says every fraction is at most 1 and ``limiting`` names the largest fraction.
    Fractions are rounded to 6 digits so reports are deterministic.
    """
    p = part if isinstance(part, Part) else lookup_part(part)
    cap = p.capacity()
    exact = {k: float(resources.get(k, 0)) / cap[k] for k in RESOURCES}
    limiting = max(RESOURCES, key=lambda k: exact[k])
    return {"part": p.part, "utilization": {k: round(u, 6) for k, u in exact.items()},
            "fits": all(u <= 1.0 for u in exact.values()), "limiting": limiting}
