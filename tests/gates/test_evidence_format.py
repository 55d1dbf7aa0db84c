"""Offline verification of evidence bundles, against bundles built here from the format's definition.

The bundles are assembled with hashlib, orjson and the ``cryptography`` Ed25519 primitives directly, not
with the code under test, so these tests also pin the format an outside auditor would re-implement.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lockgate.gates.evidence_format import verify_bundle

Document = dict[str, Any]

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
ALL_CHECKS = {
    "canonical",
    "format",
    "digest",
    "signature",
    "audit entry",
    "audit head",
    "release",
    "reports",
    "policy",
    "datasets",
}


def canon(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def public(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def seal(document: Document, key: Ed25519PrivateKey) -> Document:
    """Sign ``document``'s record with ``key`` and re-derive the audit entry and head, as a forger would."""
    sealed = copy.deepcopy(document)
    evidence, entry = sealed["evidence"], sealed["audit"]["entry"]
    evidence["record"]["public_key"] = evidence["public_key"] = public(key)
    digest = sha(canon(evidence["record"]))
    evidence["sha256"], evidence["signature"] = digest, sign(key, b"lockgate-evidence:" + digest.encode())
    record = evidence["record"]
    after = {"sha256": digest, "decision": record["decision"], "environment": record["environment"]}
    entry["after"] = canon({**orjson.loads(entry["after"]), **after}).decode()
    fields = {k: v for k, v in entry.items() if k not in ("prev_hash", "hash")}
    entry["hash"] = sha((entry["prev_hash"] + canon(fields).decode()).encode())
    head_message = f"lockgate-audit-head:{entry['seq']}:{entry['hash']}".encode()
    sealed["audit"]["head"] = {
        "seq": entry["seq"],
        "hash": entry["hash"],
        "signature": sign(key, head_message),
        "public_key": public(key),
    }
    return sealed


RELEASE: Document = {
    "route": "support-answer",
    "prompt": {
        "name": "support-answer",
        "version": "1.2.0",
        "content_hash": "c" * 64,
        "messages": [{"role": "user", "content": "Answer: {{ question }}"}],
        "variables": {"type": "object", "properties": {"question": {"type": "string"}}},
    },
    "model": {
        "reference": "support-llm@champion",
        "name": "support-llm",
        "version": "1",
        "gateway_model": "m",
    },
    "parameters": {"temperature": 0.1, "max_tokens": 64},
    "output_contract": None,
    "retrieval": {},
    "tools": [],
    "fallbacks": [],
    "git_commit": "0123abc",
}
RELEASE_ID = "rel_" + sha(canon(RELEASE))[:32]
DATASET: Document = {
    "name": "support-golden",
    "version": 2,
    "spec": {"description": "Questions customers ask", "scorers": [{"type": "contains"}]},
    "cases": [
        {"id": "refund", "variables": {"question": "Can I get a refund?"}, "expected": "30 days"},
        {"id": "ünïcode", "variables": {"question": "Ça marche ?"}, "expected": "oui"},
    ],
}
REPORTS = [
    {"run_id": "run_candidate", "format": "json", "content": '{"pass_rate": 0.91, "cases": 2}'},
    {"run_id": "run_baseline", "format": "md", "content": "# Baseline\n\npass rate 0.93\n"},
]
MODULES = {"gate.rego": "package lockgate.gate\n\ndefault allow := false\n"}


def template() -> Document:
    """A complete bundle whose signatures and derived hashes ``seal`` fills in."""
    record = {
        "id": "evd_" + "a1" * 12,
        "tenant": "default",
        "route": "support-answer",
        "environment": "prod",
        "release_id": RELEASE_ID,
        "git_commit": "0123abc",
        "decision": "deny",
        "reasons": ["pass rate fell 0.02 below the baseline"],
        "warnings": ["judge agreement not measured"],
        "datasets": [
            {
                "name": DATASET["name"],
                "version": DATASET["version"],
                "sha256": sha(canon({"spec": DATASET["spec"], "cases": DATASET["cases"]})),
            }
        ],
        "reports": [
            {
                "run_id": r["run_id"],
                "dataset": "support-golden@2",
                "role": role,
                "format": r["format"],
                "sha256": sha(r["content"].encode()),
            }
            for r, role in zip(REPORTS, ["candidate", "baseline"], strict=True)
        ],
        "policy": {"sha256": sha(canon(MODULES)), "engine": "rego", "modules": MODULES},
        "approvers": ["april"],
        "requested_by": "dan",
        "requested_at": "2025-03-01T09:30:00Z",
        "gate_input": {"candidate": {"pass_rate": 0.91}, "baseline": {"pass_rate": 0.93}},
        "decided_at": "2025-03-01T09:30:01.250000Z",
        "public_key": "",
    }
    after = {"evidence": record["id"], "sha256": "", "decision": "deny", "environment": "prod"}
    entry = {
        "seq": 7,
        "at": "2025-03-01T09:30:01.250000+00:00",
        "actor": "dan",
        "action": "evidence.record",
        "resource": f"release:default/{RELEASE_ID}",
        "before": None,
        "after": canon(after).decode(),
        "outcome": "success",
        "source": "cli",
        "request_id": None,
        "prev_hash": "9f" * 32,
        "hash": "",
    }
    return {
        "format": "lockgate-evidence/1",
        "evidence": {"record": record, "sha256": "", "signature": "", "public_key": ""},
        "audit": {"entry": entry, "head": {}},
        "release": copy.deepcopy(RELEASE),
        "reports": copy.deepcopy(REPORTS),
        "datasets": [copy.deepcopy(DATASET)],
    }


def bundle(key: Ed25519PrivateKey = KEY) -> Document:
    return seal(template(), key)


def failed_checks(document: Document, trusted: str | None = None) -> set[str]:
    result = verify_bundle(canon(document), trusted)
    assert result.ok == (not result.failed)
    return set(result.failed)


def test_a_bundle_built_from_the_format_verifies() -> None:
    result = verify_bundle(canon(bundle()), public(KEY))
    assert result.ok, result.checks
    assert {check.name for check in result.checks} == ALL_CHECKS | {"trusted key"}
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert result.fingerprint == hashlib.sha256(raw).hexdigest()[:16]


def test_without_a_policy_the_policy_check_passes() -> None:
    document = template()
    document["evidence"]["record"]["policy"] = None
    assert failed_checks(seal(document, KEY)) == set()


def test_every_flipped_byte_fails() -> None:
    data = canon(bundle())
    assert verify_bundle(data).ok
    unnoticed = []
    for position in range(len(data)):
        for mask in (0x01, 0x20):
            changed = bytearray(data)
            changed[position] ^= mask
            if verify_bundle(bytes(changed)).ok:
                unnoticed.append((position, mask, data[max(0, position - 20) : position + 20]))
    assert unnoticed == []


def test_reformatted_json_fails_only_the_canonical_check() -> None:
    pretty = orjson.dumps(bundle(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    result = verify_bundle(pretty)
    assert result.failed == ["canonical"]
    assert not result.ok


def test_not_json_fails_with_no_fingerprint() -> None:
    result = verify_bundle(b"\x00not json")
    assert not result.ok
    assert [c.name for c in result.checks] == ["canonical"]
    assert result.fingerprint is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("release"), "release"),
        (lambda d: d["audit"]["head"].pop("signature"), "audit.head.signature"),
        (lambda d: d.update(format="lockgate-evidence/2"), "format"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["audit"]["entry"].update(seq="7"), "audit.entry.seq"),
        (lambda d: d["evidence"]["record"].pop("decision"), "evidence.record.decision"),
    ],
)
def test_a_malformed_bundle_names_the_field(change: Callable[[Document], object], field: str) -> None:
    document = bundle()
    change(document)
    result = verify_bundle(canon(document))
    assert not result.ok
    assert result.failed == ["format"]
    assert result.checks[-1].detail.startswith(f"{field}:")


def _edit_reason(d: Document) -> None:
    d["evidence"]["record"]["reasons"] = ["all good"]


def _edit_reason_and_rehash(d: Document) -> None:
    _edit_reason(d)
    d["evidence"]["sha256"] = sha(canon(d["evidence"]["record"]))


def _edit_entry_and_rehash(d: Document) -> None:
    entry = d["audit"]["entry"]
    entry["actor"] = "mallory"
    fields = {k: v for k, v in entry.items() if k not in ("prev_hash", "hash")}
    entry["hash"] = sha((entry["prev_hash"] + canon(fields).decode()).encode())


def _set_padding_bits_of_signature(d: Document) -> None:
    raw = base64.b64decode(d["evidence"]["signature"])
    text = base64.b64encode(raw).decode()  # 64 bytes end in "xy==": 4 bits of y are unused
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    d["evidence"]["signature"] = text[:-3] + alphabet[alphabet.index(text[-3]) ^ 1] + "=="
    assert base64.b64decode(d["evidence"]["signature"]) == raw


def _swap_signing_key(d: Document) -> None:
    evidence = d["evidence"]
    evidence["public_key"] = public(OTHER_KEY)
    evidence["signature"] = sign(OTHER_KEY, b"lockgate-evidence:" + evidence["sha256"].encode())


TAMPERING: dict[str, tuple[Callable[[Document], object], set[str]]] = {
    "a reason edited": (_edit_reason, {"digest"}),
    "a reason edited, digest recomputed": (_edit_reason_and_rehash, {"signature", "audit entry"}),
    "the decision edited": (
        lambda d: d["evidence"]["record"].update(decision="allow"),
        {"digest", "audit entry"},
    ),
    "signature of another message": (
        lambda d: d["evidence"].update(signature=sign(KEY, b"lockgate-evidence:" + b"0" * 64)),
        {"signature"},
    ),
    "signature with stray padding bits": (_set_padding_bits_of_signature, {"signature"}),
    "signed by another key": (_swap_signing_key, {"signature", "audit head"}),
    "audit entry edited": (lambda d: d["audit"]["entry"].update(actor="mallory"), {"audit entry"}),
    "audit entry edited and re-hashed": (_edit_entry_and_rehash, {"audit head"}),
    "audit entry of other evidence": (
        lambda d: d["audit"]["entry"].update(resource="release:default/rel_other"),
        {"audit entry"},
    ),
    "audit head signed by another key": (
        lambda d: d["audit"]["head"].update(
            signature=sign(OTHER_KEY, f"lockgate-audit-head:7:{d['audit']['head']['hash']}".encode())
        ),
        {"audit head"},
    ),
    "audit head of another seq": (lambda d: d["audit"]["head"].update(seq=8), {"audit head"}),
    "release parameter changed": (lambda d: d["release"]["parameters"].update(temperature=0.9), {"release"}),
    "release with an unknown field": (lambda d: d["release"].update(notes="x"), {"release"}),
    "report content changed": (
        lambda d: d["reports"][0].update(content='{"pass_rate": 0.99, "cases": 2}'),
        {"reports"},
    ),
    "report left out": (lambda d: d["reports"].pop(), {"reports"}),
    "unreferenced report added": (
        lambda d: d["reports"].append({"run_id": "run_x", "format": "json", "content": "{}"}),
        {"reports"},
    ),
    "report included twice": (lambda d: d["reports"].append(copy.deepcopy(d["reports"][0])), {"reports"}),
    "dataset case changed": (
        lambda d: d["datasets"][0]["cases"][0].update(expected="60 days"),
        {"datasets"},
    ),
    "dataset of another version": (lambda d: d["datasets"][0].update(version=3), {"datasets"}),
    "policy module edited": (
        lambda d: d["evidence"]["record"]["policy"]["modules"].update({"gate.rego": "package x"}),
        {"digest", "policy"},
    ),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampering_fails_the_check_that_covers_it(case: str) -> None:
    change, expected = TAMPERING[case]
    document = bundle()
    change(document)
    assert failed_checks(document) == expected


def test_a_forger_who_re_signs_is_caught_only_by_the_trusted_key() -> None:
    document = template()
    better = '{"pass_rate": 0.99, "cases": 2}'
    document["reports"][0]["content"] = better
    document["evidence"]["record"]["reports"][0]["sha256"] = sha(better.encode())
    document["evidence"]["record"]["decision"] = "allow"
    forged = seal(document, OTHER_KEY)
    assert failed_checks(forged) == set()
    assert failed_checks(forged, public(OTHER_KEY)) == set()
    assert failed_checks(forged, public(KEY)) == {"trusted key"}


def test_the_trusted_key_check_compares_keys() -> None:
    result = verify_bundle(canon(bundle(OTHER_KEY)), public(KEY))
    assert result.failed == ["trusted key"]
    raw = OTHER_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert result.fingerprint == hashlib.sha256(raw).hexdigest()[:16]
    assert verify_bundle(canon(bundle(OTHER_KEY)), public(OTHER_KEY)).ok
    assert verify_bundle(canon(bundle(OTHER_KEY))).ok
