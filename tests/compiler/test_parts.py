"""The FPGA parts registry: lookup by short or full name, a clear error for unknown parts, fits()."""
import pytest

from masec.errors import MasecError
from masec.parts import PARTS, RESOURCES, fits, known_parts, lookup_part

REQUIRED = {  # short name: full ordering string (issue 10)
    "xc7z020": "xc7z020clg400-1", "xczu3eg": "xczu3eg-sbva484-1-e", "xczu9eg": "xczu9eg-ffvb1156-2-e",
    "xcu50": "xcu50-fsvh2104-2-e", "xcu250": "xcu250-figd2104-2L-e", "xcu280": "xcu280-fsvh2892-2L-e",
    "xcvu9p": "xcvu9p-flga2104-2L-e",
}


@pytest.mark.parametrize("short,full", sorted(REQUIRED.items()))
def test_short_and_full_names_resolve_to_one_part(short, full):
    p = lookup_part(short)
    assert p is lookup_part(full) is lookup_part(full.upper()) is lookup_part(f" {short} ")
    assert (p.name, p.part) == (short, full)
    assert min(p.lut, p.ff, p.dsp, p.bram36) > 0 and p.ff == 2 * p.lut  # every CLB LUT has two flip-flops


def test_vendor_figures():
    # spot checks against the AMD product tables (DS190, DS891, DS890)
    z7, zu9 = lookup_part("xc7z020"), lookup_part("xczu9eg")
    assert (z7.lut, z7.ff, z7.dsp, z7.bram36) == (53200, 106400, 220, 140)
    assert (zu9.lut, zu9.ff, zu9.dsp, zu9.bram36) == (274080, 548160, 2520, 912)
    u250 = lookup_part("xcu250")
    assert (u250.lut, u250.ff, u250.dsp, u250.bram36, u250.uram) == (1728000, 3456000, 12288, 2688, 1280)
    assert lookup_part("xcvu9p").dsp == 6840 and lookup_part("xcu280").bram36 == 2016
    assert lookup_part("xcu50").uram == 640
    assert z7.family == "xc7" and {lookup_part(n).family for n in REQUIRED if n != "xc7z020"} == {"xcup"}


def test_unknown_part_is_one_line_naming_the_known_parts():
    with pytest.raises(MasecError) as exc:
        lookup_part("xc7a35t")
    msg = str(exc.value)
    assert "\n" not in msg and "xc7a35t" in msg
    for short, full in REQUIRED.items():
        assert short in msg and full in msg
    assert set(known_parts()) == set(PARTS) >= set(REQUIRED)


def test_fits():
    p = lookup_part("xc7z020")
    ok = fits({"LUT": 26600, "FF": 0, "DSP": 220, "BRAM": 0.5}, p)
    assert ok["fits"] and ok["part"] == "xc7z020clg400-1"
    assert ok["utilization"] == {"LUT": 0.5, "FF": 0.0, "DSP": 1.0, "BRAM": round(0.5 / 140, 6)}
    assert ok["limiting"] == "DSP" and list(ok["utilization"]) == list(RESOURCES)
    over = fits({"DSP": 221}, "xc7z020")          # a part name works too; missing keys count 0
    assert not over["fits"] and over["limiting"] == "DSP"
    assert fits({"DSP": 221}, "xcu250")["fits"]
    with pytest.raises(MasecError):
        fits({"LUT": 1}, "nope")


def test_ecp5_parts():
    # FPGA-DS-02012 table 1.1 (EBR, multipliers); LUT4 counts as nextpnr-ecp5 reports TRELLIS_COMB capacity
    figures = {"LFE5U-25F-6BG381C": (24288, 56, 28, "--25k"), "LFE5U-45F-6BG381C": (43848, 108, 72, "--45k"),
               "LFE5U-85F-6BG381C": (83640, 208, 156, "--85k")}
    for full, (lut, ebr, mult, flag) in figures.items():
        p = lookup_part(full)
        assert p is lookup_part(full.lower()) is lookup_part(full.split("-6")[0])
        assert (p.lut, p.ff, p.bram36, p.dsp) == (lut, lut, ebr, mult)
        assert p.family == "ecp5" and p.is_ecp5 and p.vendor == "lattice" and p.bram_kbits == 18
        assert p.pnr_args == (flag, "--package", "CABGA381", "--speed", "6")
    assert not any(lookup_part(n).is_ecp5 for n in REQUIRED) and {lookup_part(n).vendor for n in REQUIRED} == {"xilinx"}
