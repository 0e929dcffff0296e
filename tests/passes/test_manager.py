import pytest

from masec.errors import InternalError, MasecError, PassError
from masec.passes.manager import PassManager


def test_runs_in_order_and_names_the_failing_pass():
    seen = []

    def ok(gm, cfg):
        seen.append("ok")
        return 1

    def boom(gm, cfg):
        raise ZeroDivisionError("x")

    with pytest.raises(InternalError, match=r"pass boom \(after ok\) failed: ZeroDivisionError") as exc:
        PassManager().add("ok", ok).add("boom", boom).run(None, None)
    assert seen == ["ok"]
    assert not isinstance(exc.value, MasecError)          # a masec bug is no user error (exit 1, not 2)
    assert isinstance(exc.value.__cause__, ZeroDivisionError)   # the traceback stays available for --debug


def test_user_errors_keep_their_type_and_gain_the_pass_name():
    def bad(gm, cfg):
        raise PassError("node `fc`: nope")

    with pytest.raises(MasecError, match=r"pass bad \(after none\): node `fc`: nope"):
        PassManager().add("bad", bad).run(None, None)


def test_results_by_pass():
    res = PassManager().add("a", lambda g, c: 1).add("b", lambda g, c: 2).run(None, None)
    assert res == {"a": 1, "b": 2}
