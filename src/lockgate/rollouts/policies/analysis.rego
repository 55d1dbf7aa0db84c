# The default decision of a rollout analysis: the candidate arm against the baseline arm (the release
# the environment serves), on the metrics of the current stage.
#
# input.arms.{baseline,candidate}: requests, errors, error_rate, p95_latency_ms, cost_per_request,
#   contract_violation_rate, quality (null without scores), quality_samples
# input.analysis: min_requests, failure_limit, thresholds (see docs/rollouts.md)
# input.failures: metric -> failed analyses so far in this rollout
#
# verdict: "fail" when a metric has failed more often than failure_limit allows, "pass" when both arms
# have enough requests and no metric fails, else "inconclusive" (the stage holds).
package lockgate.rollout

import rego.v1

baseline := input.arms.baseline

candidate := input.arms.candidate

t := input.analysis.thresholds

enough if {
	baseline.requests >= input.analysis.min_requests
	candidate.requests >= input.analysis.min_requests
}

failing contains "error_rate" if {
	enough
	candidate.error_rate > baseline.error_rate * t.max_error_rate_ratio
	candidate.error_rate - baseline.error_rate > t.max_error_rate_increase
}

failing contains "p95_latency" if {
	enough
	baseline.p95_latency_ms > 0
	candidate.p95_latency_ms > baseline.p95_latency_ms * t.max_p95_latency_ratio
}

failing contains "cost_per_request" if {
	enough
	baseline.cost_per_request > 0
	candidate.cost_per_request > baseline.cost_per_request * t.max_cost_ratio
}

failing contains "contract_violations" if {
	enough
	candidate.contract_violation_rate - baseline.contract_violation_rate > t.max_contract_violation_increase
}

failing contains "quality" if {
	enough
	candidate.quality != null
	baseline.quality != null
	baseline.quality - candidate.quality > t.max_quality_drop
}

# A metric fails the rollout once it has failed more analyses than failure_limit tolerates.
exhausted contains metric if {
	some metric in failing
	object.get(input.failures, metric, 0) + 1 > input.analysis.failure_limit
}

verdict := "fail" if {
	count(exhausted) > 0
} else := "pass" if {
	enough
	count(failing) == 0
} else := "inconclusive"

reasons contains msg if {
	"error_rate" in failing
	msg := sprintf("error rate %.4f on the candidate against %.4f on the baseline (allowed: x%v and +%v)", [
		candidate.error_rate, baseline.error_rate, t.max_error_rate_ratio, t.max_error_rate_increase,
	])
}

reasons contains msg if {
	"p95_latency" in failing
	msg := sprintf("p95 latency %.1f ms on the candidate against %.1f ms (allowed: x%v)", [
		candidate.p95_latency_ms, baseline.p95_latency_ms, t.max_p95_latency_ratio,
	])
}

reasons contains msg if {
	"cost_per_request" in failing
	msg := sprintf("cost per request %v on the candidate against %v (allowed: x%v)", [
		candidate.cost_per_request, baseline.cost_per_request, t.max_cost_ratio,
	])
}

reasons contains msg if {
	"contract_violations" in failing
	msg := sprintf("output-contract violations %.4f on the candidate against %.4f (allowed: +%v)", [
		candidate.contract_violation_rate, baseline.contract_violation_rate, t.max_contract_violation_increase,
	])
}

reasons contains msg if {
	"quality" in failing
	msg := sprintf("quality %.3f on the candidate against %.3f (allowed drop: %v)", [
		candidate.quality, baseline.quality, t.max_quality_drop,
	])
}

reasons contains msg if {
	not enough
	msg := sprintf("not enough traffic yet: %v baseline and %v candidate requests, %v each needed", [
		baseline.requests, candidate.requests, input.analysis.min_requests,
	])
}

failed_metrics := sort([m | some m in failing])

decision := {"verdict": verdict, "failing": failed_metrics, "reasons": sort([r | some r in reasons])}
