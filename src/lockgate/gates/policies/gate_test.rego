# Tests of the default gate policy in `opa test` style: every rule named test_* must be true.
# Each rule of gate.rego has a case on each side of its threshold. The input is set key by key
# (`with input.datasets as ...`), which both OPA and rego-cpp evaluate.
package lockgate.gate_test

import rego.v1

import data.lockgate.gate

thresholds := {
	"max_quality_drop": 0.02,
	"max_safety_failure_rate": 0.0,
	"p95_latency_ms": 3000,
	"max_cost_increase": 0.20,
	"min_quality": null,
}

# Metrics of a healthy run; a test overrides single keys with object.union.
healthy := {
	"run_id": "run_candidate",
	"cases": 40,
	"quality": 0.91,
	"pass_rate": 0.9,
	"safety_failures": 0,
	"safety_failure_rate": 0.0,
	"latency_p50_ms": 120.0,
	"latency_p95_ms": 410.0,
	"cost_per_1k_usd": 0.42,
	"error_rate": 0.0,
}

dataset(suite, candidate, baseline) := {
	"name": "support-golden",
	"version": 3,
	"suite": suite,
	"candidate": object.union(healthy, candidate),
	"baseline": baseline,
	"comparison": null,
}

with_baseline(candidate) := dataset("quality", candidate, healthy)

# The decision on datasets, with thresholds overridden by overrides and the given missing runs.
decide(datasets, overrides, missing) := d if {
	limits := object.union(thresholds, overrides)
	d := gate.decision with input.datasets as datasets with input.thresholds as limits with input.missing as missing with input.baseline_release as "rel_base"
}

test_clean_input_allowed if {
	d := decide([with_baseline({})], {}, [])
	d.allow
	count(d.deny) == 0
	count(d.warn) == 0
}

test_quality_drop_at_threshold_allowed if {
	d := decide([with_baseline({"quality": 0.89})], {}, [])
	d.allow
	count(d.deny) == 0
}

test_quality_drop_over_threshold_denied if {
	d := decide([with_baseline({"quality": 0.889})], {}, [])
	not d.allow
	d.deny == {"quality on support-golden@3 is 0.889, below baseline 0.910 (rel_base) by 0.021; the allowed drop is 0.020"}
}

test_quality_drop_without_baseline_not_denied if {
	d := decide([dataset("quality", {"quality": 0.5}, null)], {}, [])
	d.allow
}

test_quality_drop_on_safety_suite_not_denied if {
	d := decide([dataset("safety", {"quality": 0.0}, healthy)], {}, [])
	d.allow
}

test_min_quality_below_denied_without_baseline if {
	d := decide([dataset("quality", {"quality": 0.85}, null)], {"min_quality": 0.9}, [])
	not d.allow
	d.deny == {"quality on support-golden@3 is 0.850, below the minimum 0.900"}
}

test_min_quality_met_allowed if {
	d := decide([dataset("quality", {"quality": 0.9}, null)], {"min_quality": 0.9}, [])
	d.allow
}

test_min_quality_ignores_safety_suites if {
	d := decide([dataset("safety", {"quality": 0.0}, null)], {"min_quality": 0.9}, [])
	d.allow
}

test_safety_rate_above_threshold_denied if {
	d := decide([dataset("safety", {"safety_failures": 2, "safety_failure_rate": 0.05}, null)], {}, [])
	not d.allow
	d.deny == {"safety on support-golden@3: 2 failures, a failure rate of 0.050; the allowed rate is 0.000"}
}

test_safety_rate_at_threshold_allowed if {
	candidate := {"safety_failures": 2, "safety_failure_rate": 0.05}
	d := decide([dataset("safety", candidate, null)], {"max_safety_failure_rate": 0.05}, [])
	d.allow
}

test_p95_latency_over_budget_denied if {
	d := decide([with_baseline({"latency_p95_ms": 3000.5})], {}, [])
	not d.allow
	d.deny == {"p95 latency on support-golden@3 is 3000.5 ms, over the budget of 3000 ms"}
}

test_p95_latency_at_budget_allowed if {
	d := decide([with_baseline({"latency_p95_ms": 3000})], {}, [])
	d.allow
}

test_null_threshold_switches_its_check_off if {
	d := decide([with_baseline({"latency_p95_ms": 99000})], {"p95_latency_ms": null}, [])
	d.allow
}

test_missing_runs_denied_verbatim if {
	missing := ["no completed eval run of release rel_candidate on dataset support-golden@3"]
	d := decide([], {}, missing)
	not d.allow
	d.deny == {missing[0]}
}

test_cost_rise_within_allowance_not_warned if {
	d := decide([with_baseline({"cost_per_1k_usd": 0.4998})], {}, [])
	d.allow
	count(d.warn) == 0
}

test_cost_rise_at_allowance_not_warned if {
	d := decide([with_baseline({"cost_per_1k_usd": 0.504})], {}, [])
	count(d.warn) == 0
}

test_cost_rise_over_allowance_warned if {
	d := decide([with_baseline({"cost_per_1k_usd": 0.5082})], {}, [])
	d.allow
	d.warn == {"cost on support-golden@3 is $0.508 per 1k cases, 21.0% above baseline $0.420 (rel_base); the allowed increase is 20.0%"}
}

test_cost_without_baseline_cost_not_warned if {
	d := decide([dataset("quality", {"cost_per_1k_usd": 5}, object.union(healthy, {"cost_per_1k_usd": 0}))], {}, [])
	count(d.warn) == 0
}

test_every_failure_reported if {
	d := decide([with_baseline({"quality": 0.5, "latency_p95_ms": 5000})], {}, [])
	not d.allow
	count(d.deny) == 2
}
