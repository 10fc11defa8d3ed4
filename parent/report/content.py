"""The report's text: `ReportFacts` -> `Document`, one section per part of the evidence.

Every number here is a field of `ReportFacts` (verified or recomputed there); this
module only chooses words and order. It stays modest on purpose: Hermetic provides
evidence about one training job, not legal compliance.
"""
from __future__ import annotations

import math

from parent.audit.result import EmpiricalAudit
from parent.report import plots
from parent.report.document import (
    Block,
    BulletList,
    Document,
    Figure,
    Inline,
    Paragraph,
    Section,
    Subheading,
    Summary,
    Table,
    Text,
    runs,
)
from parent.report.facts import LedgerFact, ReportFacts
from parent.report.frameworks import Framework, frameworks

__all__ = ["AUDIT_COMMAND", "AUDIT_CONTROL_COMMAND", "build_document"]

AUDIT_COMMAND = "hermetic audit JOB.toml --local --json > audit.json"
AUDIT_CONTROL_COMMAND = "hermetic audit JOB.toml --local --control-no-noise --json > control.json"
#: The key policy condition that releases a dataset's data key only to the pinned image.
IMAGE_CONDITION = "kms:RecipientAttestation:ImageSha384"
SIGNER_CONDITION = "kms:RecipientAttestation:PCR8"


def _g(value: float) -> str:
    return f"{value:.4g}"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _c(text: str) -> Text:
    return Text(text, code=True)


def _b(text: str) -> Text:
    return Text(text, bold=True)


def _p(*parts: str | Text, note: bool = False) -> Paragraph:
    return Paragraph(runs(*parts), note=note)


def _row(*cells: str | Text | Inline) -> tuple[Inline, ...]:
    return tuple(c if isinstance(c, tuple) else runs(c) for c in cells)


def _kv(rows: list[tuple[str, str | Text | Inline]], caption: str = "") -> Table:
    return Table(("Item", "Value"), tuple(_row(k, v) for k, v in rows), caption, (0.3, 0.7))


def build_document(facts: ReportFacts) -> Document:
    """The whole report for `facts`."""
    sections = [
        _guarantee(facts),
        _image(facts),
        _attestation(facts),
        _key_policy(facts),
        _training(facts),
        _datasets(facts),
        _audit_trail(facts),
        _empirical(facts),
        *(_framework(i, fw) for i, fw in enumerate(frameworks(facts), start=1)),
        _limits(facts),
        _recheck(facts),
    ]
    numbered = tuple(Section(f"{i}. {s.title}", s.blocks, s.anchor) for i, s in enumerate(sections, start=1))
    return Document(
        title="Differential privacy compliance report",
        subtitle=f"Training job {facts.job_id}",
        summary=_summary(facts),
        sections=numbered,
        footer=(f"Generated {facts.generated_at} by hermetic report from certificate {facts.certificate_file} "
                f"(SHA-256 {facts.certificate_sha256}). Every value in this report was verified or recomputed "
                "from the inputs named in it. This report is evidence for the organisation's own assessment; it "
                "is not legal advice and does not by itself establish compliance with any law or standard."),
    )


# --- summary ------------------------------------------------------------------------------


def _summary(f: ReportFacts) -> Summary:
    items = [
        ("Epsilon", f"{_g(f.total_epsilon)} ({f.accountant} accountant, recomputed)"),
        ("Delta", _g(f.delta)),
        ("Unit of privacy", f"one {f.privacy_unit} of the sealed dataset"),
        ("Job", f"{f.job_id}: {f.steps} steps, finished {f.finished_at}"),
        ("Datasets", ", ".join(f"{d.dataset_id} ({d.records} records)" for d in f.datasets)),
        ("Enclave image", f"PCR0 {f.image_pcr[:24]}… pinned and attested"),
    ]
    if f.ledgers:
        items.append(("Budget ledger", "; ".join(
            f"verified: {_g(ledger.spent_epsilon)} of {_g(ledger.max_epsilon)} spent on {ledger.dataset_id}"
            for ledger in f.ledgers)))
    else:
        items.append(("Budget ledger", "not supplied (the certificate's own statement is shown)"))
    if f.audit_trail is not None:
        items.append(("Audit trail", f"verified: {f.audit_trail.count} events, head matches the certificate"))
    else:
        items.append(("Audit trail", "not supplied"))
    if f.empirical:
        items.append(("Empirical audit", "supplied by the operator, not attested: " + "; ".join(
            f"{_run_name(e)} lower bound {_g(e.epsilon_lower_bound)}" for e in f.empirical)))
    else:
        items.append(("Empirical audit", "not supplied"))
    if not f.root_is_aws:
        items.append(("Attestation root", "NOT the AWS Nitro root: a local or test appliance"))
    return Summary("Certificate verified", tuple(items))


# --- the guarantee ------------------------------------------------------------------------


def _guarantee(f: ReportFacts) -> Section:
    factor = math.exp(f.total_epsilon)
    n = min((d.records for d in f.datasets), default=0)
    blocks: list[Block] = [
        _p("The model of job ", _c(f.job_id), " was trained with differentially private stochastic gradient "
           "descent (DP-SGD) inside an attested enclave. Its certificate verified: the enclave that issued it runs "
           "the pinned image, and the privacy loss it states was recomputed independently from the training "
           "ledger it certifies."),
        _p(_b("The guarantee. "), f"Take any one record of the sealed dataset. Whether that record was used in "
           f"training or replaced by a null record changes the probability of every possible output of the job (the "
           f"model, its checkpoints and the released metrics) by at most a factor of e^epsilon = {factor:.3g} "
           f"(epsilon = {_g(f.total_epsilon)}), except with a probability of at most delta = {_g(f.delta)}."),
        Table(("Term", "In this job"), (
            _row("Unit of privacy", f"one {f.privacy_unit} of the sealed dataset ({n} records)"),
            _row("Neighbouring datasets", f"{f.neighbouring}: one record replaced by a null record that contributes "
                 "nothing to training; the record count is public. For the Poisson-subsampled Gaussian mechanism "
                 "this gives the same privacy curve as adding or removing one record, the relation the "
                 "accountants compute with."),
            _row("Sampling", f"Poisson sampling: each record joins each step's batch independently with "
                 f"probability q = {_g(f.sampling_rate)}"),
            _row("Epsilon, delta", f"{_g(f.total_epsilon)}, {_g(f.delta)}"),
        ), "", (0.25, 0.75)),
        Subheading("What an adversary can and cannot learn"),
        BulletList((
            runs("Anyone holding the model, even with every other record and unlimited computation, cannot "
                 "reliably tell whether a given record was in the training data, nor learn its values, beyond "
                 f"the bound above: any inference about one record is at most {factor:.3g} times more likely with "
                 "it than without it (except with probability delta)."),
            runs("They can learn what holds across many records: patterns, correlations and statistics of the "
                 "population. A fact about a group can apply to a person in it whether or not their record was "
                 "used; differential privacy does not hide such facts, and is not meant to."),
            runs("The number of records and the dataset's schema are public by the data owner's declaration at "
                 "sealing; they are not protected."),
            runs("The bound is per record: a person with k records is protected at roughly k times epsilon."),
        )),
    ]
    return Section("The guarantee in plain words", tuple(blocks), "guarantee")


# --- the evidence chain ---------------------------------------------------------------------


def _image(f: ReportFacts) -> Section:
    rows = []
    for index in sorted(set(f.attested_pcrs) | set(f.pinned_pcrs)):
        attested, pinned = f.attested_pcrs.get(index), f.pinned_pcrs.get(index)
        status = ("pinned, matches" if pinned is not None and pinned == attested else
                  "not pinned" if pinned is None else "MISMATCH")
        rows.append(_row(f"PCR{index}", runs(_c(pinned or "—")), runs(_c(attested or "—")), status))
    source = (f"the measurements file {f.measurements_file}" if f.measurements_file else "values given with --pcr")
    blocks: list[Block] = [
        _p("The enclave image is identified by its measurements: PCR0 hashes the whole image (kernel, init and "
           "application), PCR1 the kernel and boot ramdisk, PCR2 the application. The certificate was verified "
           f"with the values from {source}; every pinned value must equal the one the enclave attested."),
        Table(("PCR", "Pinned by the verifier", "Attested in the certificate", "Status"), tuple(rows),
              "", (0.08, 0.4, 0.4, 0.12)),
        _p("The image is built reproducibly (pinned base image, hashed dependencies, fixed timestamps): anyone can "
           "rebuild it from the released source and compare PCR0, PCR1 and PCR2 with the measurements pinned here. "
           "This report checked the certificate against the measurements; it did not rebuild the image.", note=True),
    ]
    return Section("Enclave image and reproducible build", tuple(blocks), "image")


def _attestation(f: ReportFacts) -> Section:
    rows: list[tuple[str, str | Text | Inline]] = [
        ("Trust anchor", f.root),
        ("Trust anchor SHA-256", _c(f.root_sha256)),
        ("Enclave module", _c(f.module_id)),
        ("Attested at", f.attested_at),
        ("Certificate file", f.certificate_file),
        ("Certificate SHA-256", _c(f.certificate_sha256)),
        ("Body SHA-384 (the attested user data)", _c(f.body_sha384)),
        ("Certificate body version", str(f.body_version)),
    ]
    if f.sealed_checked:
        rows.append(("Sealed files matched", ", ".join(f.sealed_checked)))
    if f.spec_checked:
        rows.append(("Job spec matched", f.spec_checked))
    blocks: list[Block] = [
        _p("The certificate's attestation document was checked as of its own time: its certificate chain up to the "
           "trust anchor, its ES384 signature, its binding to the certificate body (the attested user data is "
           "the body's SHA-384), the attested PCRs, and the body's consistency with each dataset's sealed budget."),
        _kv(rows),
    ]
    if not f.root_is_aws:
        blocks.append(_p("The trust anchor is not the AWS Nitro Enclaves root: this certificate was attested by a "
                         "local or test appliance. It demonstrates the evidence and its checks, not the isolation of "
                         "Nitro hardware.", note=True))
    return Section("Attestation", tuple(blocks), "attestation")


def _key_policy(f: ReportFacts) -> Section:
    signer = f.pinned_pcrs.get(8)
    rows = [
        _row(_c(IMAGE_CONDITION), runs(_c(f.image_pcr)), "the image's PCR0: only this image receives the data key"),
        _row(_c(SIGNER_CONDITION), runs(_c(signer)) if signer else "not pinned here",
             "for signed images: the signing certificate (optional)"),
    ]
    keys = ", ".join(sorted({d.key_id for d in f.datasets}))
    blocks: list[Block] = [
        _p("Neither the certificate nor the measurements carry the KMS key policies. What releases a dataset's data "
           "key is the condition in the data owner's key policy: KMS decrypts for the parent's role only with a "
           "recipient attestation document whose PCR0 equals the published image. For the evidence in this report "
           "to hold, the key policy of ", _c(keys or "the dataset's key"), " must pin these values:"),
        Table(("Key policy condition", "Value it must pin", "Meaning"), tuple(rows), "", (0.3, 0.45, 0.25)),
        _p("Check it with ", _c("aws kms get-key-policy --key-id KEY --policy-name default"), " (statement ",
           _c("AttestedEnclaveUnseals"), "); the templates are in ", _c("kms-policies/"), ".", note=True),
    ]
    return Section("Key policies", tuple(blocks), "keys")


def _training(f: ReportFacts) -> Section:
    blocks: list[Block] = [
        _kv([
            ("Steps", str(f.steps)),
            ("Sampling rate q (Poisson)", _g(f.sampling_rate)),
            ("Noise multiplier sigma", _g(f.noise_multiplier)),
            ("Clipping norm C", _g(f.max_grad_norm)),
            ("Ledger segments (q, sigma, steps)", "; ".join(f"({_g(q)}, {_g(s)}, {t})" for q, s, t in f.segments)
             or "none"),
            ("Job budget", f"epsilon {_g(f.max_epsilon)}"),
            ("Model spec SHA-256", _c(f.model_spec_sha256)),
            ("Job spec SHA-256", _c(f.spec_sha256)),
            ("Model weights SHA-256", _c(f.model_sha256)),
            ("Checkpoint SHA-256", _c(f.checkpoint_sha256)),
            ("Started, finished", f"{f.started_at}, {f.finished_at}"),
        ]),
        Table(("Accountant", "Epsilon at delta " + _g(f.delta), "Role"), tuple(
            _row(name, _g(value), "reported" if name == f.accountant else "cross-check")
            for name, value in sorted(f.epsilons.items())), "Every accountant replays the certified ledger.",
            (0.25, 0.35, 0.4)),
    ]
    if f.metrics_epsilon > 0:
        blocks.append(_p(f"Released DP metrics cost epsilon {_g(f.metrics_epsilon)} more, composed on top: "
                         f"{_g(f.total_epsilon)} in all."))
    if f.search is not None:
        s = f.search
        blocks.append(_p(f"This job was a hyper-parameter search of {s['trials']} trials ({s['distribution']}, mean "
                         f"{_g(s['mean'])}) over {s['runs']} distinct runs, selected on {s['metric']}; the epsilon "
                         "above is the whole search's (repeat-and-select, RDP). No curve over steps is drawn for a "
                         "search."))
    if f.curve:
        blocks.append(Figure(
            plots.epsilon_curve_png(f.curve, delta=f.delta, accountant=f.accountant, budget=f.max_epsilon,
                                    total=f.total_epsilon),
            f"Epsilon spent over the {f.steps} training steps, recomputed with the {f.accountant} accountant at "
            f"{len(f.curve)} points from the certified q, sigma and steps.",
            "Line chart of epsilon against training steps"))
    if f.metrics:
        blocks.append(Table(("Released metric", "Kind", "Step", "Value", "Epsilon cost"), tuple(
            _row(name, kind, str(step), _g(value), _g(cost)) for name, kind, step, value, cost in f.metrics),
            "Metrics the enclave released, as certified.", (0.35, 0.2, 0.1, 0.15, 0.2)))
    if f.accuracy:
        blocks.append(Figure(
            plots.accuracy_png(f.accuracy),
            "Released accuracy on the public evaluation data against the epsilon training had spent at each "
            "evaluation step.", "Accuracy against epsilon"))
    elif f.search is None:
        blocks.append(_p("The certificate releases no accuracy metric, so no accuracy-against-epsilon figure is "
                         "drawn.", note=True))
    return Section("Training and privacy accounting", tuple(blocks), "training")


def _datasets(f: ReportFacts) -> Section:
    blocks: list[Block] = [Table(
        ("Dataset", "Owner", "Records", "Sealed file SHA-256", "This job's epsilon", "Spent (as certified)", "Cap"),
        tuple(_row(d.dataset_id, d.owner, str(d.records), runs(_c(d.sealed_sha256)), _g(d.epsilon),
                   _g(d.dataset_epsilon), f"{_g(d.max_epsilon)} at delta {_g(d.delta)}") for d in f.datasets),
        "Each dataset as the attested certificate records it.", (0.17, 0.1, 0.08, 0.3, 0.11, 0.12, 0.12))]
    if f.public_datasets:
        blocks.append(Table(("Public dataset", "SHA-256", "Records"), tuple(
            _row(name, runs(_c(sha)), str(records)) for name, sha, records in f.public_datasets), "",
            (0.3, 0.55, 0.15)))
    if not f.ledgers:
        blocks.append(_p("No budget ledger was supplied (--ledger), so the dataset's budget over jobs is not "
                         "plotted; the spend above is the certificate's own statement of what the ledger held when "
                         "this job reserved its steps.", note=True))
    for ledger in f.ledgers:
        blocks.extend(_ledger_blocks(ledger))
    return Section("Datasets and their budget ledgers", tuple(blocks), "ledger")


def _ledger_blocks(ledger: LedgerFact) -> list[Block]:
    blocks: list[Block] = [
        Subheading(f"Budget ledger of {ledger.dataset_id}"),
        _p("Read from ", _c(ledger.read_from), "; every entry verified with the ledger key in the dataset's "
           f"attested encryption context. {_count(len(ledger.entries), 'entry', 'entries')}; cumulative epsilon "
           f"{_g(ledger.spent_epsilon)} of the cap {_g(ledger.max_epsilon)} at delta {_g(ledger.delta)} "
           f"({ledger.accountant}); remaining {_g(ledger.remaining_epsilon)}."),
        Figure(plots.budget_png(ledger), f"The dataset's cumulative epsilon after each job's ledger entry; the cap "
               f"is {_g(ledger.max_epsilon)}.", "Step chart of the dataset's epsilon over jobs"),
        Table(("Slot", "Created", "Job", "Steps", "Cumulative epsilon", "Protected"), tuple(
            _row(str(e.slot), e.created_at, (_b(e.job_id),) if e.this_job else e.job_id, str(e.steps),
                 _g(e.cumulative_epsilon), "yes" if e.protected else "no") for e in ledger.entries),
            "Ledger entries, oldest first; this job's in bold.", (0.08, 0.25, 0.27, 0.1, 0.18, 0.12)),
    ]
    if ledger.agrees:
        blocks.append(_p(f"After this job's entry the ledger held {_g(ledger.job_cumulative_epsilon)}, which is what "
                         "the certificate states."))
    else:
        blocks.append(_p(f"After this job's entry the ledger held {_g(ledger.job_cumulative_epsilon)}; the certificate "
                         f"states {_g(ledger.certified_dataset_epsilon)}. Review the ledger.", note=True))
    if not ledger.all_protected:
        blocks.append(_p("Some entries are unprotected (a local directory): their owner could delete the newest "
                         "entries undetectably, so this ledger shows a lower bound on what the dataset has spent. "
                         "A production ledger in S3 with Object Lock protects every entry.", note=True))
    if ledger.ignored:
        blocks.append(_p(f"{ledger.ignored} slot(s) were ignored as not valid entries.", note=True))
    if ledger.read_from != ledger.certified_location:
        blocks.append(_p("The ledger was read from another location than the one certified (",
                         _c(ledger.certified_location), "), for example a copy; its entries verify with the "
                         "certified key all the same.", note=True))
    return blocks


def _audit_trail(f: ReportFacts) -> Section:
    t = f.audit_trail
    if t is None:
        text = ("This certificate predates the audit trail: it states no chain head." if f.audit_log_sha256 is None
                else f"The certificate commits to an audit trail of {f.audit_log_events} events with head "
                     f"{f.audit_log_sha256}, but the log (audit-log.cbor, beside the certificate) was not supplied "
                     "with --audit-log, so its events are not shown.")
        return Section("Audit trail", (_p(text, note=True),), "audit-trail")
    blocks: list[Block] = [
        _p("The enclave records every security-relevant event of the session in a hash chain; the chain's head "
           "and event count are in the attested certificate. The log ", _c(t.file), f" was verified against them: "
           f"every link recomputed, sequence numbers without a gap, {t.count} events, head ", _c(t.head), "."),
        Table(("Event type", "Count"), tuple(_row(kind, str(count)) for kind, count in t.by_type), "",
              (0.7, 0.3)),
        Table(("Seq", "Time", "Event", "Fields"), tuple(
            _row(str(e.seq), e.time, e.type, runs(_c(e.fields)) if e.fields else "") for e in t.events),
            "The events in order.", (0.06, 0.22, 0.18, 0.54)),
    ]
    if len(t.events) < t.count:
        blocks.append(_p(f"The first {len(t.events)} of {t.count} events are listed.", note=True))
    return Section("Audit trail", tuple(blocks), "audit-trail")


def _run_name(e: EmpiricalAudit) -> str:
    return "no-noise control" if e.control else "noised run"


def _above(e: EmpiricalAudit) -> bool:
    """The run's lower bound exceeds the accountant's epsilon (recomputed here: the stated verdict is unattested)."""
    return e.epsilon_lower_bound > e.epsilon_certified * (1 + 1e-6)


def _outcome(e: EmpiricalAudit) -> str:
    above = _above(e)
    if e.control:
        return ("above the accountant's epsilon: the audit sees a mechanism without noise" if above else
                "NOT above the accountant's epsilon: this audit could not tell a run without noise from the claim")
    return ("ABOVE the accountant's epsilon: the accounting or the implementation does not hold as stated"
            if above else "not above the accountant's epsilon, as it must not be")


def _empirical(f: ReportFacts) -> Section:
    if not f.empirical:
        return Section("Empirical privacy audit", (
            _p("No empirical audit was supplied. An empirical one-run audit (Steinke, Nasr and Jagielski, 2023) "
               "trains once with canary records and turns correct membership guesses into a lower bound on "
               "epsilon: it can expose a broken implementation, never prove a correct one. To run one on public or "
               "synthetic data, with its no-noise control, and include both here:"),
            _p(_c(AUDIT_COMMAND)),
            _p(_c(AUDIT_CONTROL_COMMAND)),
            _p("then pass ", _c("--audit audit.json --audit control.json"), " to hermetic report."),
        ), "empirical")

    blocks: list[Block] = [
        _p(_b("Supplied by the operator, not attested. "), "This audit ran in-process on public or synthetic "
           "data, outside any enclave, and nothing verifies that it ran as stated. It tests the training code's "
           "privacy empirically; it says nothing about the sealed dataset. A noised run's lower bound must not "
           "exceed the accountant's epsilon; a control run, trained with the noise switched off, must give a "
           "bound far above it, which shows the audit can see a broken mechanism. The ceiling is the largest "
           "bound the run's canaries and guesses could show: the audit detects bugs, it does not prove the "
           "accounting tight.", note=True),
        Table(("Run", "Lower bound", "Ceiling", "Right / guesses", "Accountant's epsilon", "Outcome"), tuple(
            _row(_run_name(e), f"{_g(e.epsilon_lower_bound)} at {_g(e.confidence)}", _g(e.ceiling),
                 f"{e.correct} / {e.guesses} ({e.canaries} {e.canary_kind} canaries)", _g(e.epsilon_certified),
                 _outcome(e))
            for e in f.empirical), "", (0.14, 0.14, 0.09, 0.2, 0.13, 0.3)),
        Table(("Run", "Sampling rate", "Noise multiplier", "Steps", "Delta", "Accountant", "Records, time",
               "Certified job's recipe"), tuple(
            _row(_run_name(e), _g(e.sampling_rate), _g(e.noise_multiplier), str(e.steps), _g(e.delta), e.accountant,
                 f"{e.records}, {e.seconds:.0f} s", "same" if _same_recipe(e, f) else "different")
            for e in f.empirical),
            f"The certified job: sampling rate {_g(f.sampling_rate)}, noise multiplier {_g(f.noise_multiplier)}, "
            f"{f.steps} steps, delta {_g(f.delta)}, {f.accountant} accountant. A control's noise multiplier is the "
            "one it left out.", (0.14, 0.11, 0.11, 0.08, 0.08, 0.1, 0.14, 0.14)),
    ]
    if not all(_same_recipe(e, f) for e in f.empirical):
        blocks.append(_p("An audited recipe is not the certified job's: that run speaks to the training code, "
                         "not to this job's parameters.", note=True))
    if any(not e.control and _above(e) for e in f.empirical):
        blocks.append(_p("The empirical lower bound of a noised run is ABOVE the accountant's epsilon: the accounting "
                         "or the implementation does not hold as stated. Investigate before relying on this job.",
                         note=True))
    if any(e.control and not _above(e) for e in f.empirical):
        blocks.append(_p("A no-noise control did not rise above the accountant's epsilon: this audit's canaries "
                         "and guesses cannot detect a broken mechanism at this epsilon; use more canaries.", note=True))
    return Section("Empirical privacy audit", tuple(blocks), "empirical")


def _same_recipe(e: EmpiricalAudit, f: ReportFacts) -> bool:
    pairs = ((e.sampling_rate, f.sampling_rate), (e.noise_multiplier, f.noise_multiplier), (e.steps, f.steps),
             (e.delta, f.delta))
    return e.accountant == f.accountant and all(math.isclose(float(a), float(b), rel_tol=1e-6) for a, b in pairs)


# --- frameworks and limits ----------------------------------------------------------------


def _framework(index: int, fw: Framework) -> Section:
    rows = tuple(_row(r.requirement, r.evidence, r.duty) for r in fw.rows)
    return Section(fw.title, (
        _p(_b(fw.reference + ". "), fw.intro),
        Table(("Requirement", "Evidence in this report", "Remains the organisation's duty"), rows, "",
              (0.26, 0.44, 0.30)),
    ), fw.key)


def _limits(f: ReportFacts) -> Section:
    return Section("What this report does not show", (BulletList((
        runs("That the organisation complies with any law or standard: it maps evidence to requirements; the "
             "determinations are the organisation's, its DPO's, its counsel's or a qualified expert's."),
        runs("That the enclave image's code is correct: it shows which image ran (PCR0) and that the privacy "
             "accounting of its ledger recomputes. Reviewing or reproducing the image is how its code is trusted."),
        runs("Anything about data or releases outside this job and its dataset's ledger."),
        runs("Whether the record-level unit of privacy matches people: see the unit of privacy above."),
        runs("Side channels of the hardware, timing or message sizes."),
    )),), "limits")


def _recheck(f: ReportFacts) -> Section:
    pin = f"--measurements {f.measurements_file}" if f.measurements_file else f"--pcr 0={f.image_pcr}"
    root = "" if f.root_is_aws else " --root ROOT.pem"
    commands = [f"hermetic verify-certificate {f.certificate_file} {pin}{root}"]
    if f.audit_trail is not None:
        commands.append(f"hermetic audit-log verify {f.audit_trail.file} --certificate {f.certificate_file} "
                        f"{pin}{root}")
    for d in f.datasets:
        commands.append(f"hermetic budget show SEALED_FILE_OF_{d.dataset_id}")
    return Section("Re-checking this report", (
        _p("Anyone can repeat the checks offline with the same inputs:"),
        BulletList(tuple(runs(_c(c)) for c in commands)),
    ), "recheck")
