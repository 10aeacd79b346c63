package main

import (
	"fmt"
	"sort"
	"time"
)

// pairResult is a baseline (A) and a subject (B) measured in alternating
// slices.
type pairResult struct {
	opsA, opsB   float64
	secsA, secsB float64
	sliceRatios  []float64 // B/A rate of each adjacent pair of slices
}

func (p pairResult) rateA() float64 { return p.opsA / p.secsA }
func (p pairResult) rateB() float64 { return p.opsB / p.secsB }

// detail describes how steady the ratio was across slices.
func (p pairResult) detail() map[string]any {
	rs := append([]float64(nil), p.sliceRatios...)
	sort.Float64s(rs)
	if len(rs) == 0 {
		return nil
	}
	return map[string]any{"slices": len(rs), "slice_ratio_min": rs[0], "slice_ratio_median": rs[len(rs)/2], "slice_ratio_max": rs[len(rs)-1]}
}

// interleave runs A and B for total each, in slices of one second or more
// (A B, B A, A B, ...), so that load from other tenants of a shared machine
// falls on both alike. Each call returns how many operations it completed
// and in how long.
func interleave(total time.Duration, minSlice time.Duration, a, b func(time.Duration) (float64, time.Duration, error)) (pairResult, error) {
	n := max(1, int(total/minSlice))
	slice := total / time.Duration(n)
	var p pairResult
	for i := 0; i < n; i++ {
		first, second := a, b
		if i%2 == 1 {
			first, second = b, a
		}
		var rate [2]float64
		for k, fn := range []func(time.Duration) (float64, time.Duration, error){first, second} {
			ops, el, err := fn(slice)
			if err != nil {
				return p, err
			}
			isA := (k == 0) == (i%2 == 0)
			if isA {
				p.opsA += ops
				p.secsA += el.Seconds()
				rate[0] = ops / el.Seconds()
			} else {
				p.opsB += ops
				p.secsB += el.Seconds()
				rate[1] = ops / el.Seconds()
			}
		}
		if rate[0] > 0 {
			p.sliceRatios = append(p.sliceRatios, rate[1]/rate[0])
		}
	}
	return p, nil
}

// note summarises the slice ratios for the table.
func (p pairResult) note() string {
	rs := append([]float64(nil), p.sliceRatios...)
	if len(rs) < 2 {
		return ""
	}
	sort.Float64s(rs)
	return fmt.Sprintf("%d slice pairs, ratio %.2f–%.2f", len(rs), rs[0], rs[len(rs)-1])
}

// interleaveN runs every fn for total each, in rounds of one slice of each
// (one second or more), the order reversed every other round (A B C,
// C B A, A B C, ...), so that load from other tenants falls on all alike.
// rates holds each round's rate of each fn, in the order of fns.
func interleaveN(total, minSlice time.Duration, fns ...func(time.Duration) (float64, time.Duration, error)) (ops, secs []float64, rates [][]float64, err error) {
	n := max(1, int(total/minSlice))
	slice := total / time.Duration(n)
	ops, secs = make([]float64, len(fns)), make([]float64, len(fns))
	for i := 0; i < n; i++ {
		rate := make([]float64, len(fns))
		for k := range fns {
			j := k
			if i%2 == 1 {
				j = len(fns) - 1 - k
			}
			o, el, err := fns[j](slice)
			if err != nil {
				return ops, secs, rates, err
			}
			ops[j] += o
			secs[j] += el.Seconds()
			if el > 0 {
				rate[j] = o / el.Seconds()
			}
		}
		rates = append(rates, rate)
	}
	return ops, secs, rates, nil
}

// pairOf is the pair (a as the baseline, b as the subject) out of an
// interleaveN run.
func pairOf(ops, secs []float64, rates [][]float64, a, b int) pairResult {
	p := pairResult{opsA: ops[a], opsB: ops[b], secsA: secs[a], secsB: secs[b]}
	for _, r := range rates {
		if r[a] > 0 {
			p.sliceRatios = append(p.sliceRatios, r[b]/r[a])
		}
	}
	return p
}
