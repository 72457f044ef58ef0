#!/usr/bin/env bash
# The kill campaign on demand: SIGKILL a 200-task, two-step run at random moments, resume,
# and check every trial (outputs byte-identical to an uninterrupted run, no task lost, none
# run beside itself, reruns only within the documented window). CI runs 30 trials; this runs
# TRIALS (default 200) and prints the campaign's summary line for RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE_KILL_TRIALS=${TRIALS:-200} cargo test --locked --test resume \
  a_campaign_of_random_kills -- --nocapture 2>&1 | grep -E -A1 "kill campaign|test result|panicked"
