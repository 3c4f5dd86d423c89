#!/usr/bin/env bash
# Time-to-quality: faster-rnnlm's training, then elman's defaults with half its wall; then elman's defaults to the end.
set -u
# FASTER_RNNLM: its executable; ELMAN: elman's; OUT: where the runs go. Run it alone on the machine.
# RESERVE: seconds of half faster-rnnlm's wall kept for elman's start and end (default 3: they took 1.7-2.6 s on a
# 2-core VM, so the whole process fits; 0: the training budget is half the wall itself).
K=~/.cache/elman/kjv-ptb-1
OUT=${OUT:-runs/time-to-quality}; mkdir -p $OUT

E=${ELMAN:-elman}
echo "load before: $(uptime)"
rm -f $OUT/frnn*
t0=$(date +%s.%N)
${FASTER_RNNLM:-faster-rnnlm} -rnnlm $OUT/frnn -train $K/train.txt -valid $K/valid.txt -hidden 200 -hidden-type sigmoid -threads 1 -bptt 4 -bptt-block 10 -seed 1 > $OUT/frnn-train.log 2>&1
t1=$(date +%s.%N)
FW=$(python3 -c "print(round($t1-$t0,1))")
${FASTER_RNNLM:-faster-rnnlm} -rnnlm $OUT/frnn -test $K/test.txt > $OUT/frnn-test.log 2>&1
echo "faster-rnnlm wall ${FW}s; $(grep -i entropy $OUT/frnn-test.log | tail -1); load $(cut -d' ' -f1-3 /proc/loadavg)"
MIN=$(python3 -c "print(round(($FW/2-${RESERVE:-3})/60,3))")
t0=$(date +%s.%N)
$E train --train $K --out $OUT/half --minutes $MIN --quiet --force > $OUT/half.log 2>&1
t1=$(date +%s.%N)
echo "elman defaults --minutes $MIN: wall $(python3 -c "print(round($t1-$t0,1))")s; $(tail -1 $OUT/half/metrics.jsonl); load $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s.%N)
$E train --train $K --out $OUT/full --quiet --force > $OUT/full.log 2>&1
t1=$(date +%s.%N)
echo "elman defaults to the end: wall $(python3 -c "print(round($t1-$t0,1))")s; $(tail -1 $OUT/full/metrics.jsonl); load $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s.%N)
$E eval --model $OUT/full --data $K/test.txt --quiet > $OUT/full-eval.log 2>&1
t1=$(date +%s.%N)
echo "elman eval test: wall $(python3 -c "print(round($t1-$t0,1))")s: $(tail -1 $OUT/full-eval.log)"
t0=$(date +%s.%N)
$E eval --model $OUT/full --data $K/test.txt --dynamic --quiet > $OUT/full-dyn.log 2>&1
t1=$(date +%s.%N)
echo "elman eval --dynamic test: wall $(python3 -c "print(round($t1-$t0,1))")s: $(tail -1 $OUT/full-dyn.log)"
