package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
)

// Helpers shared by the store commands' output.

func addFormatFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, "format", "table", "output format: table or json")
}

func checkFormat(f string) error {
	if f != "table" && f != "json" {
		return usageError{fmt.Sprintf("--format: %q is not table or json", f)}
	}
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// humanSize prints bytes the way docker does (decimal units, 3 significant digits).
func humanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.3g%s", f, units[i])
}

// humanAgo prints "2 hours ago" like docker.
func humanAgo(t time.Time) string {
	if t.IsZero() {
		return "N/A"
	}
	d := time.Since(t)
	if d < 0 {
		return "in the future"
	}
	s := func(n int64, unit string) string {
		if n == 1 {
			if unit == "hour" {
				return "About an hour ago"
			}
			return fmt.Sprintf("1 %s ago", unit)
		}
		return fmt.Sprintf("%d %ss ago", n, unit)
	}
	switch {
	case d < time.Minute:
		return "Less than a minute ago"
	case d < time.Hour:
		return s(int64(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return s(int64(d/time.Hour), "hour")
	case d < 14*24*time.Hour:
		return s(int64(d/(24*time.Hour)), "day")
	case d < 60*24*time.Hour:
		return s(int64(d/(7*24*time.Hour)), "week")
	case d < 2*365*24*time.Hour:
		return s(int64(d/(30*24*time.Hour)), "month")
	}
	return s(int64(d/(365*24*time.Hour)), "year")
}
