import os
import random

import pytest


@pytest.fixture
def seed(request):
    """A per-test seed: MASEC_SEED if set, else random; printed so a failure can be replayed."""
    s = int(os.environ.get("MASEC_SEED", random.SystemRandom().randrange(1, 2**31)))
    print(f"\n[masec] {request.node.nodeid}: seed {s} (replay with MASEC_SEED={s})")
    return s
