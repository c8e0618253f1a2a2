"""The Python API (`spotsim.verify`, `spotsim.run`) and the pytest plugin, on real jobs, real signals and the
real emulator: a correct job passes, a broken one fails, one without step events is inconclusive, and a
user's test file gets its fixtures from the installed pytest11 entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import spotsim
from spotsim.errors import InvalidOption, SpotsimError

pytest_plugins = ["pytester"]

JOBS = Path(__file__).parent / "jobs"
PLAIN_JOB = JOBS / "plain_gcs_job.py"


def test_a_correct_job_resumes(spotsim_verify):
    result = spotsim_verify([sys.executable, PLAIN_JOB], artifact="model.npz", preemptions=1)
    assert result.resume_correct, result
    assert result.outcome == "pass" and result.exit_code == 0 and not result.inconclusive and not result.reasons
    assert len(result.runs) == 1 and result.kills and result.resumes
    assert (result.out / "verdict.json").is_file()


def test_a_job_that_repeats_an_epoch_is_not_resume_correct(spotsim_verify):
    result = spotsim_verify([sys.executable, JOBS / "repeats_an_epoch.py"], artifact="model.npz", preemptions=1)
    assert not result.resume_correct and result.outcome == "fail" and result.exit_code == 1
    assert any("reference at step 200" in reason for reason in result.reasons), result


def test_a_job_without_step_events_is_inconclusive_on_its_own_emulator_and_out_dir():
    result = spotsim.verify([sys.executable, JOBS / "no_step_events.py"], artifact="model.npz")  # no fixture
    try:
        assert result.inconclusive and result.exit_code == 3 and not result.resume_correct
        assert any("no step events" in reason for reason in result.reasons), result
        assert (result.out / "verdict.json").is_file()  # out: a kept temporary directory
    finally:
        shutil.rmtree(result.out)


def test_run_measures_two_preemptions(tmp_path):
    result = spotsim.run(
        [sys.executable, str(PLAIN_JOB)], schedule="steps:60,130", kill="sigkill", interval_steps=20, out=tmp_path
    )
    assert result.completed and result.crash is None and result.out == tmp_path
    assert result.preemptions == 2 and result.final_step == 200 and result.lost_steps >= 0
    assert result.summary.accounting.identity_holds
    assert (tmp_path / "summary.json").is_file()


BAD = {
    "verify: unknown kill mode": (spotsim.verify, {"kill": "sigstop"}),
    "run: unknown kill mode": (spotsim.run, {"kill": "sigstop", "interval_steps": 10}),
    "run: no interval": (spotsim.run, {}),
    "run: unknown machine": (spotsim.run, {"interval": "5m", "machine": "no-such-vm"}),
    "verify: grace not a duration": (spotsim.verify, {"grace": "soon"}),
    "verify: no runs": (spotsim.verify, {"preemptions": 0}),
    "verify: bucket and emulator": (spotsim.verify, {"bucket": "file:///tmp/x", "emulator_url": "http://127.0.0.1:1"}),
    "verify: bad kill steps": (spotsim.verify, {"kill_steps": "ten"}),
}


@pytest.mark.parametrize(("call", "options"), BAD.values(), ids=BAD.keys())
def test_bad_options_raise_a_spotsim_error_before_anything_runs(tmp_path, call, options):
    with pytest.raises(SpotsimError):
        call([sys.executable, str(PLAIN_JOB)], out=tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_a_command_given_as_one_string_is_refused():
    with pytest.raises(InvalidOption, match="list of arguments"):
        spotsim.verify(f"{sys.executable} {PLAIN_JOB}")


def test_import_spotsim_does_not_load_the_harness():
    code = "import sys, spotsim; assert not {'spotsim.api', 'spotsim.harness'} & set(sys.modules), sorted(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert spotsim.verify.__module__ == "spotsim.api"


def test_a_users_test_gets_the_fixture_from_the_entry_point(pytester):
    pytester.makepyfile(
        test_resume=f"""
        import sys

        JOB = {str(PLAIN_JOB)!r}

        def test_resumes(spotsim_verify):
            assert spotsim_verify([sys.executable, JOB], artifact="model.npz", preemptions=1).resume_correct
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
