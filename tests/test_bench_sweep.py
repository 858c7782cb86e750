"""The speed/quality sweep runs end to end on tiny shapes and reports every option against the default."""

import pytest

from nextscale.bench.sweep import OPTIONS, sweep, table

pytestmark = pytest.mark.cpu_only


@pytest.mark.slow
def test_the_sweep_times_and_judges_each_option():
    options = [OPTIONS[0], *(o for o in OPTIONS if o.handoff_last == 1 and not o.guidance_off_last)]
    rows = sweep("tiny", 1, batch=2, runs=1, warmup=0, n_per_class=2, options=options, progress=False)
    assert [r.option for r in rows] == [o.name for o in options]
    assert rows[0].speedup == 1.0 and rows[0].token_speedup == 1.0
    for row in rows:
        assert 0 < row.token_seconds <= row.seconds and 0 <= row.accuracy <= 1 and row.frechet_ratio > 0
    assert table(rows, "tiny", 2, "fp32", "cpu").count("\n") == len(rows) + 1
