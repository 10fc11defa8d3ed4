"""parent.verify.subject: a certificate against the sealed files and spec the verifier holds."""
from __future__ import annotations

from pathlib import Path

import pytest

from enclave.certificate.body import DatasetRecord
from enclave.errors import ConfigError
from enclave.training.spec import JobSpec
from parent.verify.errors import SubjectMismatch
from parent.verify.subject import SealedFile, check_sealed, check_spec, read_spec
from tests.support.certificates import context, make_body, sha256_hex
from tests.support.specs import mlp_spec


def sealed_file(**changes: object) -> SealedFile:
    fields: dict[str, object] = {"name": "a.sealed", "dataset_id": "patients-2024", "sha256": sha256_hex("sealed"),
                                 "key_id": "alias/hospital-a", "encryption_context": context()}
    fields.update(changes)
    return SealedFile(**fields)  # type: ignore[arg-type]  # test values


def test_a_matching_file_passes_and_unlisted_datasets_are_not_required() -> None:
    second = DatasetRecord("clinic-b", sha256_hex("b"), "alias/clinic-b", context("clinic-b"), 60000, 0.5, 1.5)
    body = make_body()
    body_two = make_body(datasets=(*body.datasets, second))
    check_sealed(body, [sealed_file()])
    check_sealed(body_two, [sealed_file()])  # the other owner's dataset is theirs to check
    check_sealed(body, [])


def test_each_field_is_named_with_both_values() -> None:
    body = make_body()
    with pytest.raises(SubjectMismatch, match=r"^key_id of dataset 'patients-2024': certificate "
                                              r"'alias/hospital-a', a.sealed 'alias/other'$"):
        check_sealed(body, [sealed_file(key_id="alias/other")])
    extra = {**context(), "extra": "x"}
    with pytest.raises(SubjectMismatch, match=r"^encryption_context extra of dataset 'patients-2024': "
                                              r"certificate \(absent\), a.sealed 'x'$"):
        check_sealed(body, [sealed_file(encryption_context=extra)])
    records = {**context(), "record_count": "59999"}
    with pytest.raises(SubjectMismatch, match="record_count .* certificate '60000', a.sealed '59999'"):
        check_sealed(body, [sealed_file(encryption_context=records)])


def test_hashes_with_the_same_ends_are_shown_where_they_differ() -> None:
    certified = "ab" * 32
    other = certified[:20] + "ff" + certified[22:]
    body = make_body(spec_sha256=certified)
    with pytest.raises(SubjectMismatch) as err:
        check_spec(body, other, "job.toml")
    assert str(err.value) == ("spec_sha256: certificate ...abababababab..., job.toml ...ababffababab...")
    check_spec(body, certified, "job.toml")


def test_the_model_format_hash_is_checked_when_given() -> None:
    body = make_body(spec_sha256=sha256_hex("spec"), model_spec_sha256=sha256_hex("model-a"))
    check_spec(body, sha256_hex("spec"), "job.toml")  # the spec hash alone, as before
    check_spec(body, sha256_hex("spec"), "job.toml", model_spec_sha256=sha256_hex("model-a"))
    with pytest.raises(SubjectMismatch, match=r"^model_spec_sha256: certificate .*, job.toml .*$"):
        check_spec(body, sha256_hex("spec"), "job.toml", model_spec_sha256=sha256_hex("model-b"))


def _spec(*, model: str) -> str:
    return mlp_spec(key_id="k", name="x", steps=1, batch=10, model=model)


def test_a_spec_file_gives_both_hashes_and_an_unknown_preset_is_refused(tmp_path: Path) -> None:
    inline = tmp_path / "inline.toml"
    inline.write_text(_spec(model='format = 1\nlayers = [{ type = "linear" }]'), encoding="utf-8")
    spec = read_spec(inline)
    assert spec == JobSpec.from_toml(inline.read_text()) and spec.model_sha256 == spec.model_format.sha256
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(_spec(model='name = "resnet"'), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^job spec {unknown}: unknown model 'resnet'; registered models: "):
        read_spec(unknown)
