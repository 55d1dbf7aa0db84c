# The default release gate. It reads the gate input document (release, environment, baseline release,
# thresholds, per-dataset candidate/baseline metrics and the list of missing eval runs) and decides.
#
# - deny: quality dropped more than max_quality_drop below the baseline, quality under min_quality,
#   safety failure rate over max_safety_failure_rate, p95 latency over p95_latency_ms, and every entry
#   of input.missing verbatim;
# - warn: cost per 1k cases rose more than max_cost_increase above the baseline;
# - allow is true only when nothing is denied.
#
# Quality rules apply to "quality" suites only (a safety suite's quality is not meaningful). A threshold
# that is null switches its check off. Comparisons that involve arithmetic allow `epsilon` of slack, so
# a value exactly at its threshold passes despite binary floating point (0.91 - 0.89 > 0.02 in doubles).
# Routes add rules by shipping extra modules in this package.
package lockgate.gate

import rego.v1

thresholds := input.thresholds

epsilon := 1e-9

deny contains msg if {
	some d in input.datasets
	d.suite == "quality"
	is_number(thresholds.max_quality_drop)
	is_number(d.candidate.quality)
	is_number(d.baseline.quality)
	drop := d.baseline.quality - d.candidate.quality
	drop > thresholds.max_quality_drop + epsilon
	msg := sprintf(
		"quality on %s is %.3f, below baseline %.3f (%v) by %.3f; the allowed drop is %.3f",
		[label(d), d.candidate.quality, d.baseline.quality, input.baseline_release, drop, thresholds.max_quality_drop],
	)
}

deny contains msg if {
	some d in input.datasets
	d.suite == "quality"
	is_number(thresholds.min_quality)
	is_number(d.candidate.quality)
	d.candidate.quality < thresholds.min_quality
	msg := sprintf(
		"quality on %s is %.3f, below the minimum %.3f",
		[label(d), d.candidate.quality, thresholds.min_quality],
	)
}

deny contains msg if {
	some d in input.datasets
	is_number(thresholds.max_safety_failure_rate)
	is_number(d.candidate.safety_failure_rate)
	d.candidate.safety_failure_rate > thresholds.max_safety_failure_rate
	msg := sprintf(
		"safety on %s: %v failures, a failure rate of %.3f; the allowed rate is %.3f",
		[label(d), d.candidate.safety_failures, d.candidate.safety_failure_rate, thresholds.max_safety_failure_rate],
	)
}

deny contains msg if {
	some d in input.datasets
	is_number(thresholds.p95_latency_ms)
	is_number(d.candidate.latency_p95_ms)
	d.candidate.latency_p95_ms > thresholds.p95_latency_ms
	msg := sprintf(
		"p95 latency on %s is %.1f ms, over the budget of %v ms",
		[label(d), d.candidate.latency_p95_ms, thresholds.p95_latency_ms],
	)
}

deny contains msg if {
	some msg in input.missing
}

warn contains msg if {
	some d in input.datasets
	is_number(thresholds.max_cost_increase)
	is_number(d.candidate.cost_per_1k_usd)
	is_number(d.baseline.cost_per_1k_usd)
	d.baseline.cost_per_1k_usd > 0
	d.candidate.cost_per_1k_usd > (d.baseline.cost_per_1k_usd * (1 + thresholds.max_cost_increase)) + epsilon
	rise := ((d.candidate.cost_per_1k_usd / d.baseline.cost_per_1k_usd) - 1) * 100
	msg := sprintf(
		"cost on %s is $%.3f per 1k cases, %.1f%% above baseline $%.3f (%v); the allowed increase is %.1f%%",
		[
			label(d), d.candidate.cost_per_1k_usd, rise, d.baseline.cost_per_1k_usd,
			input.baseline_release, thresholds.max_cost_increase * 100,
		],
	)
}

allow := count(deny) == 0

decision := {"allow": allow, "deny": deny, "warn": warn}

label(d) := sprintf("%s@%v", [d.name, d.version])
