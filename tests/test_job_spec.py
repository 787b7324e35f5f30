"""One job spec (services/job_spec.py): every shape a submission takes converts through one field
table with one set of defaults, and nothing is lost or changed on the way round."""
from hypothesis import given, settings, strategies as st

from portal.services import job_spec
from portal.services.job_spec import DEFAULTS, FIELD_NAMES, Submission

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
submissions = st.builds(
    Submission, job_type=st.sampled_from(["jupyter", "batch", "distributed"]), account_id=st.integers(1, 9),
    display_name=text, image=text, command=st.one_of(text, st.lists(text, max_size=3).map(tuple)),
    env=st.lists(st.tuples(text, text), max_size=3).map(tuple), gpu_model=text, gpus=st.integers(0, 8),
    cpu_milli=st.integers(100, 9000), memory_mib=st.integers(1024, 99999), shm_mib=st.integers(0, 999),
    working_dir=text, time_limit_seconds=st.integers(0, 99999), workers=st.integers(1, 8),
    mount_home=st.booleans(), mount_share=st.booleans(), notify=st.booleans())


@settings(max_examples=200, deadline=None)
@given(submissions)
def test_a_stored_spec_gives_back_the_submission(sub):
    assert job_spec.from_stored(job_spec.to_stored(sub), sub.account_id) == sub


@settings(max_examples=200, deadline=None)
@given(submissions)
def test_the_exported_spec_submitted_again_is_the_same_submission(sub):
    body = job_spec.exported(job_spec.to_stored(sub), "vision-lab")
    assert body["account"] == "vision-lab" and list(body)[:3] == ["job_type", "display_name", "account"]
    again = job_spec.from_body(body, sub.account_id)
    assert again == sub


def test_an_absent_field_means_the_tables_default_in_every_shape():
    from_body = job_spec.from_body({"display_name": "x", "image": "busybox:1", "command": "true"}, 3)
    from_stored = job_spec.from_stored({"display_name": "x", "image": "busybox:1", "command": "true"}, 3)
    made = Submission(job_type="batch", account_id=3, display_name="x", image="busybox:1", command="true")
    assert from_body == from_stored == made
    assert {name: getattr(made, name) for name in FIELD_NAMES if name not in ("display_name", "image", "command")} == \
        {name: value for name, value in DEFAULTS.items() if name not in ("display_name", "image", "command")}


def test_the_new_job_form_starts_from_the_tables_defaults(app):
    from portal.views.job_forms import JobForm
    with app.test_request_context():
        form = JobForm(meta={"csrf": False})
        assert int(form.cpu.data * 1000) == DEFAULTS["cpu_milli"]
        assert form.memory_gib.data * 1024 == DEFAULTS["memory_mib"]
        assert form.shm_gib.data * 1024 == DEFAULTS["shm_mib"]


def test_the_cluster_request_carries_every_resource_of_the_spec():
    sub = Submission(job_type="distributed", account_id=1, display_name="d", image="x:1", command="run", gpus=2,
                     gpu_model="A100", cpu_milli=1500, memory_mib=4096, shm_mib=1024, workers=3, mount_home=True)
    req = job_spec.cluster_request(7, sub, "alice", "lab")
    assert (req.cpu, req.memory, req.shm, req.gpus, req.workers, req.gpu_model) == ("1500m", "4096Mi", "1024Mi", 2, 3, "A100")
    assert [m.sub_path for m in req.mounts] == ["users/alice"]


def test_the_api_description_states_the_rules_limits():
    schema = job_spec.body_schema({"jupyter": 24, "batch": 72, "distributed": 72}, None, {"A100": 8})
    batch = next(v for v in schema["oneOf"] if v["title"] == "batch")["properties"]
    limits = job_spec.LIMITS
    assert (batch["cpu_milli"]["minimum"], batch["cpu_milli"]["maximum"]) == (limits.min_cpu_milli, limits.max_cpu_milli)
    assert (batch["memory_mib"]["minimum"], batch["memory_mib"]["maximum"]) == (limits.min_memory_mib, limits.max_memory_mib)
    assert batch["workers"] == {"type": "integer", "enum": [1], "description": batch["workers"]["description"]}
    assert batch["display_name"]["minLength"] == 1 and batch["gpus"]["maximum"] == 8
    assert batch["time_limit_seconds"]["oneOf"][1]["maximum"] == 72 * 3600


def test_a_worker_larger_than_any_node_is_refused_with_the_numbers(app, make):
    """Tried as a new user would: 200 cores or 2,000 GiB were accepted and promised a start on a
    cluster whose largest node has 128 cores and 1,024 GiB."""
    import pytest

    from portal.services import job_rules
    from portal.services.errors import ValidationFailed

    make.node("a100-0", gpus=8, cpu_milli=128_000, memory_mib=1024 * 1024)
    make.node("cpu-0", gpus=0, model="", cpu_milli=192_000, memory_mib=512 * 1024)
    policy = job_rules.SubmissionPolicy(time_limits={"jupyter": (1, 24), "batch": (1, 72), "distributed": (1, 72)})

    def check(**kw):
        base = dict(job_type="batch", account_id=1, display_name="big", image="busybox:1", command="true",
                    time_limit_seconds=3600)
        job_rules.check(Submission(**{**base, **kw}), policy)

    with app.app_context():
        with pytest.raises(ValidationFailed) as caught:
            check(gpus=1, gpu_model="NVIDIA-A100-SXM4-80GB", cpu_milli=200_000, memory_mib=2000 * 1024)
        assert caught.value.errors["cpu_milli"] == "No node can hold 200 CPU cores per worker: the largest has 128."
        assert "the largest has 1024 GiB" in caught.value.errors["memory_mib"]
        check(cpu_milli=150_000, memory_mib=400 * 1024)  # a CPU-only job fits the CPU node
        with pytest.raises(ValidationFailed) as caught:
            check(cpu_milli=200_000)
        assert set(caught.value.errors) == {"cpu_milli"} and "the largest has 192" in caught.value.errors["cpu_milli"]
        schema = job_spec.body_schema({"jupyter": 24, "batch": 72, "distributed": 72}, None,
                                      {"NVIDIA-A100-SXM4-80GB": 8}, job_rules.spec_context(policy)["largest"])
        batch = next(v for v in schema["oneOf"] if v["title"] == "batch")["properties"]
        assert batch["cpu_milli"]["maximum"] == 192_000 and batch["memory_mib"]["maximum"] == 1024 * 1024
