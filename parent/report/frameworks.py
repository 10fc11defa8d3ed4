"""The regulatory and standards frameworks, as data: requirement -> evidence in the report -> the organisation's duty.

Each row names what a framework asks, which verified fact of this report bears on it
(with the computed value), and what only the organisation can do. The wording is
deliberately modest: Hermetic produces evidence about one training job; whether that
evidence meets a legal standard is a determination for the organisation, its DPO, its
counsel or (under HIPAA) a qualified expert.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from parent.report.facts import ReportFacts

__all__ = ["Framework", "Requirement", "frameworks"]


@dataclass(frozen=True)
class Requirement:
    requirement: str
    evidence: str
    duty: str


@dataclass(frozen=True)
class Framework:
    key: str
    title: str
    reference: str
    intro: str
    rows: tuple[Requirement, ...]


def _g(value: float) -> str:
    return f"{value:.4g}"


def frameworks(facts: ReportFacts) -> tuple[Framework, ...]:
    return (_nist(facts), _gdpr(facts), _hipaa(facts), _ccpa(facts))


def _records(facts: ReportFacts) -> str:
    return ", ".join(f"{d.dataset_id} ({d.records} records)" for d in facts.datasets) or "none"


def _delta_vs_n(facts: ReportFacts) -> str:
    if not facts.datasets:
        return ""
    n = min(d.records for d in facts.datasets)
    if n <= 0:
        return ""
    product = facts.delta * n
    if product < 0.01:
        verdict = "delta is well below 1/N"
    elif product < 1:
        verdict = "delta is below 1/N, but not by far: the usual guidance is delta much smaller than 1/N"
    else:
        verdict = "delta is not below 1/N: a mechanism could then reveal a record outright; review delta"
    return f"; delta x N = {product:.2g} for N = {n} records ({verdict})"


def _ledger_evidence(facts: ReportFacts) -> str:
    if not facts.ledgers:
        return "Not supplied to this report (no --ledger): the certificate states each dataset's spend as " + \
            "; ".join(f"{d.dataset_id}: {_g(d.dataset_epsilon)} of {_g(d.max_epsilon)}" for d in facts.datasets) + "."
    return "; ".join(f"{ledger.dataset_id}: {len(ledger.entries)} verified entries, cumulative epsilon "
                     f"{_g(ledger.spent_epsilon)} of cap {_g(ledger.max_epsilon)}" for ledger in facts.ledgers) + "."


def _trail_evidence(facts: ReportFacts) -> str:
    trail = facts.audit_trail
    if trail is not None:
        return (f"Audit trail verified against the certificate: {trail.count} events, head "
                f"{trail.head[:16]}…, from {trail.first_time} to {trail.last_time}.")
    if facts.audit_log_sha256 is not None:
        return (f"The certificate commits to an audit trail of {facts.audit_log_events} events (head "
                f"{facts.audit_log_sha256[:16]}…); the log itself was not supplied to this report.")
    return "This certificate predates the audit trail (no head stated)."


def _empirical_evidence(facts: ReportFacts) -> str:
    if not facts.empirical:
        return "No empirical audit was supplied."
    runs = "; ".join(
        f"{'no-noise control' if e.control else 'noised run'}: epsilon lower bound {_g(e.epsilon_lower_bound)} "
        f"(confidence {_g(e.confidence)}, ceiling {_g(e.ceiling)}) against the certified {_g(e.epsilon_certified)}"
        for e in facts.empirical)
    return f"Operator-supplied, unattested empirical audit on public or synthetic data: {runs}."


def _nist(f: ReportFacts) -> Framework:
    pcr0 = f.image_pcr[:16] + "…"
    accountants = ", ".join(f"{name} {_g(value)}" for name, value in sorted(f.epsilons.items()))
    return Framework(
        key="nist",
        title="NIST SP 800-226: Guidelines for Evaluating Differential Privacy Guarantees",
        reference="NIST Special Publication 800-226 (March 2025)",
        intro=("SP 800-226 asks an evaluator to look beyond the value of epsilon: at the unit of privacy, the "
               "accounting, the trust model, and the implementation hazards of a differentially private system. "
               "The table maps each of its topics to the evidence in this report."),
        rows=(
            Requirement(
                "Unit of privacy: whose contribution is protected",
                f"Unit: one {f.privacy_unit} of the sealed dataset ({_records(f)}); neighbouring datasets differ in "
                f"one record ({f.neighbouring}: replaced by a null record, record count public), as certified.",
                "Establish that one record is one person, or account for people with several records (group "
                "privacy: k records of one person are protected at roughly k times epsilon)."),
            Requirement(
                "Privacy parameters epsilon and delta",
                f"epsilon {_g(f.total_epsilon)} at delta {_g(f.delta)} (training {_g(f.epsilon)}, {f.accountant}, "
                f"recomputed by the verifier from the certified ledger){_delta_vs_n(f)}.",
                "Decide and document which epsilon and delta are acceptable for this data and purpose."),
            Requirement(
                "Privacy accounting and composition",
                f"{f.steps} DP-SGD steps, Poisson sampling rate {_g(f.sampling_rate)}, noise multiplier "
                f"{_g(f.noise_multiplier)}, clipping norm {_g(f.max_grad_norm)}; accountants replayed: {accountants}. "
                f"Across jobs: {_ledger_evidence(f)}",
                "Account for every other release from the same people's data that does not go through this "
                "dataset's ledger (other systems, other copies of the data)."),
            Requirement(
                "Trust model (central model, trusted curator)",
                f"The curator is an attested enclave whose image is pinned: PCR0 {pcr0} was required and matched; "
                "the host that runs it is untrusted and sees only ciphertext.",
                "Trust in the enclave hardware vendor and in the code of the pinned image: review the release or "
                "rebuild it and compare the measurements."),
            Requirement(
                "Randomness generation",
                "Noise and sampling come from one CSPRNG (AES-256-CTR keyed through HKDF from the enclave's hardware "
                "random source), with a Gaussian sampler guarded against floating-point attacks; this code is part "
                "of the pinned image.",
                "None beyond trusting the pinned image's code (as above)."),
            Requirement(
                "Side channels and implementation hazards",
                "The enclave has no persistent storage, no interactive access and no shared memory with the host; "
                "the host relays only encrypted data and opaque KMS traffic.",
                "Assess timing, message-size and hardware side channels for your threat model; they are not "
                "measured by this report."),
            Requirement(
                "Data security and access control",
                f"The data key is released by KMS only to an enclave attesting PCR0 {pcr0} (key policy condition); "
                f"sealed files named: {', '.join(d.sealed_sha256[:12] + '…' for d in f.datasets) or 'none'}. "
                + _trail_evidence(f),
                "Administer the KMS keys and IAM roles, protect the raw data outside the enclave, and set "
                "retention for the sealed files, the model and this evidence."),
        ),
    )


def _gdpr(f: ReportFacts) -> Framework:
    return Framework(
        key="gdpr",
        title="GDPR: Regulation (EU) 2016/679",
        reference="Articles 25, 30, 32 and 35",
        intro=("The GDPR places these duties on the controller. The evidence below can support them; it does not "
               "discharge them, and it does not decide whether the trained model is personal data."),
        rows=(
            Requirement(
                "Art. 25: data protection by design and by default",
                f"Training under differential privacy (epsilon {_g(f.total_epsilon)}, delta {_g(f.delta)} per record); "
                f"raw records readable only inside the attested enclave; a per-dataset budget cap enforced by the "
                f"ledger. {_ledger_evidence(f)}",
                "Assess necessity and proportionality for the purpose, the state of the art and the cost, and "
                "choose the privacy parameters by default."),
            Requirement(
                "Art. 30: records of processing activities",
                f"Job {f.job_id}, run {f.started_at} to {f.finished_at}, attested {f.attested_at}; datasets "
                f"{_records(f)}; model SHA-256 {f.model_sha256[:16]}…. {_trail_evidence(f)}",
                "Keep the record itself: controller, purposes, categories of data subjects and data, recipients, "
                "transfers, retention periods. This report is an annex to it, not the record."),
            Requirement(
                "Art. 32: security of processing",
                "Data sealed under the data owner's KMS key and decrypted only in an enclave whose measurement the "
                "key policy pins; the certificate verified against the pinned measurements and attestation root; "
                "a tamper-evident audit trail. " + _trail_evidence(f),
                "Organisational measures: access management, key administration, incident response, and regular "
                "testing and evaluation of the measures."),
            Requirement(
                "Art. 35: data protection impact assessment",
                f"A quantitative bound on what the model reveals about any one record (epsilon {_g(f.total_epsilon)}, "
                f"delta {_g(f.delta)}). {_empirical_evidence(f)}",
                "Carry out the DPIA where required (systematic description, necessity, risks to rights and freedoms, "
                "measures), seek the DPO's advice, and consult the supervisory authority if high risk remains."),
        ),
    )


def _hipaa(f: ReportFacts) -> Framework:
    return Framework(
        key="hipaa",
        title="HIPAA de-identification by Expert Determination",
        reference="45 CFR 164.514(b)(1)",
        intro=("Under Expert Determination, a person with appropriate knowledge of and experience with generally "
               "accepted statistical and scientific principles determines that the risk of identifying an "
               "individual is very small, and documents the methods and results. Differential privacy is such a "
               "method; this report is input for the expert, not the determination."),
        rows=(
            Requirement(
                "164.514(b)(1)(i): the risk that an anticipated recipient could identify an individual, alone or "
                "with other reasonably available information, is very small",
                f"For any one record, the released model changes the odds of any inference by at most a factor "
                f"e^epsilon = {_g(math.exp(f.total_epsilon))}, except with probability delta = {_g(f.delta)}, "
                "whatever other information the recipient holds. " + _empirical_evidence(f),
                "A qualified expert must determine whether this is a very small risk for the anticipated "
                "recipients and the data, and whether the released model and metrics are the whole disclosure."),
            Requirement(
                "164.514(b)(1)(ii): documentation of the methods and results that justify the determination",
                f"This report and the certificate it verifies (SHA-256 {f.certificate_sha256[:16]}…), which anyone "
                "can re-verify offline with the pinned measurements.",
                "The expert documents and signs the determination; the covered entity retains it (45 CFR "
                "164.530(j): six years)."),
            Requirement(
                "Protected health information during processing",
                "The PHI was processed only inside the attested enclave; the host relayed ciphertext only.",
                "Business associate agreements with the cloud provider and any operator; minimum necessary; the "
                "raw data's own safeguards."),
        ),
    )


def _ccpa(f: ReportFacts) -> Framework:
    return Framework(
        key="ccpa",
        title="CCPA/CPRA: de-identified information",
        reference="Cal. Civ. Code 1798.140(m)",
        intro=("Information is de-identified when it cannot reasonably be used to infer information about, or "
               "otherwise be linked to, a particular consumer, and the business that possesses it meets three "
               "conditions. The technical bound below bears on the first part only."),
        rows=(
            Requirement(
                "Cannot reasonably be used to infer information about, or be linked to, a particular consumer",
                f"Differential privacy per record: epsilon {_g(f.total_epsilon)}, delta {_g(f.delta)}. "
                + _empirical_evidence(f),
                "Judge whether this bound meets the 'reasonably' standard, including for households and for "
                "consumers with several records."),
            Requirement(
                "(m)(1): reasonable measures so the information cannot be associated with a consumer or household",
                "The model and metrics are released only from the attested enclave, after DP training; raw records "
                "never leave it.",
                "Organisational and contractual measures around the model's use."),
            Requirement(
                "(m)(2): a public commitment to keep the information de-identified and not to re-identify it",
                "Not evidenced by this report.",
                "Entirely the business's duty."),
            Requirement(
                "(m)(3): contractual obligations on every recipient to comply",
                "Not evidenced by this report.",
                "Entirely the business's duty."),
        ),
    )
