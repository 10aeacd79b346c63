package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// promHistogram is one series of a Prometheus histogram as /metrics shows
// it: cumulative counts by upper bound, ascending, +Inf last.
type promHistogram struct {
	le  []float64
	cum []float64
}

// scrapeHistogram reads the histogram metric's series with label (as
// written in the exposition, e.g. `route="GET /v1/validate"`) from
// base/metrics.
func scrapeHistogram(base, metric, label string) (promHistogram, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return promHistogram{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return promHistogram{}, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return parseHistogram(resp.Body, metric, label)
}

// parseHistogram reads the _bucket lines of metric whose labels hold label.
func parseHistogram(r io.Reader, metric, label string) (promHistogram, error) {
	prefix := metric + "_bucket{"
	counts := map[float64]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) || !strings.Contains(line, label) {
			continue
		}
		end := strings.LastIndex(line, "}")
		if end < 0 {
			continue
		}
		labels, val := line[len(prefix):end], strings.TrimSpace(line[end+1:])
		if i := strings.IndexByte(val, ' '); i >= 0 { // a timestamp
			val = val[:i]
		}
		_, le, ok := strings.Cut(labels, `le="`)
		if !ok {
			continue
		}
		le, _, _ = strings.Cut(le, `"`)
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			continue
		}
		n, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		counts[bound] = n
	}
	if err := sc.Err(); err != nil {
		return promHistogram{}, err
	}
	if len(counts) == 0 {
		return promHistogram{}, fmt.Errorf("no %s series with %s", metric, label)
	}
	var h promHistogram
	for b := range counts {
		h.le = append(h.le, b)
	}
	sort.Float64s(h.le)
	for _, b := range h.le {
		h.cum = append(h.cum, counts[b])
	}
	return h, nil
}

// sub is h minus an earlier scrape o of the same series: what was observed
// in between. An empty o (a failed scrape) subtracts nothing.
func (h promHistogram) sub(o promHistogram) promHistogram {
	out := promHistogram{le: append([]float64(nil), h.le...), cum: append([]float64(nil), h.cum...)}
	if len(o.le) != len(h.le) {
		return out
	}
	for i := range out.cum {
		out.cum[i] = max(0, out.cum[i]-o.cum[i])
	}
	return out
}

// count is how many observations the histogram holds.
func (h promHistogram) count() float64 {
	if len(h.cum) == 0 {
		return 0
	}
	return h.cum[len(h.cum)-1]
}

// lastFinite is the largest finite bucket bound.
func (h promHistogram) lastFinite() float64 {
	for i := len(h.le) - 1; i >= 0; i-- {
		if !math.IsInf(h.le[i], 1) {
			return h.le[i]
		}
	}
	return 0
}

// quantile estimates the q-quantile (0 < q < 1) the way Prometheus's
// histogram_quantile does: linearly within the bucket the rank falls in,
// from 0 for the first. A rank in the +Inf bucket gives the largest finite
// bound and beyond = true. NaN for an empty histogram.
func (h promHistogram) quantile(q float64) (v float64, beyond bool) {
	total := h.count()
	if total == 0 {
		return math.NaN(), false
	}
	rank := q * total
	i := sort.Search(len(h.cum), func(i int) bool { return h.cum[i] >= rank })
	if i >= len(h.le) || math.IsInf(h.le[i], 1) {
		return h.lastFinite(), true
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = h.le[i-1], h.cum[i-1]
	}
	in := h.cum[i] - below
	if in <= 0 {
		return h.le[i], false
	}
	return lower + (h.le[i]-lower)*(rank-below)/in, false
}

// bucketOf names the bucket the q-quantile falls in, in milliseconds:
// "(0.1, 0.25] ms", "> 2500 ms", "none" for an empty histogram.
func (h promHistogram) bucketOf(q float64) string {
	total := h.count()
	if total == 0 {
		return "none"
	}
	i := sort.Search(len(h.cum), func(i int) bool { return h.cum[i] >= q*total })
	if i >= len(h.le) || math.IsInf(h.le[i], 1) {
		return fmt.Sprintf("> %g ms", h.lastFinite()*1000)
	}
	lower := 0.0
	if i > 0 {
		lower = h.le[i-1]
	}
	return fmt.Sprintf("(%g, %g] ms", lower*1000, h.le[i]*1000)
}

// quantileMS is quantile in milliseconds, ignoring beyond.
func (h promHistogram) quantileMS(q float64) float64 {
	v, _ := h.quantile(q)
	return v * 1000
}

// table is the histogram as {"≤ bound s": count in that bucket} for the
// JSON.
func (h promHistogram) table() map[string]float64 {
	out := map[string]float64{}
	prev := 0.0
	for i, b := range h.le {
		out["le "+strconv.FormatFloat(b, 'g', -1, 64)] = h.cum[i] - prev
		prev = h.cum[i]
	}
	return out
}
