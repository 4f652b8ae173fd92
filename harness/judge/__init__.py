"""Pure judgement over measured data: evaluation against the reference, fidelity, scores, regression
statistics, device noise, verdicts, the release gate and policy, and the history they compare against."""
