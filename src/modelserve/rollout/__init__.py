"""Progressive delivery: a candidate version in shadow or as a canary, judged on live traffic."""
