package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/layerstore"
)

// efficiencyFlags are strata layers' --efficiency options, with dive's CI
// rules: --ci fails (exit 1) when a rule is broken.
type efficiencyFlags struct {
	on                  bool
	ci                  bool
	lowestEfficiency    float64
	highestWastedBytes  int64
	highestUserWastedPc float64
}

func (f *efficiencyFlags) add(fs *pflag.FlagSet) {
	fs.BoolVar(&f.on, "efficiency", false, "per layer: bytes added and bytes later overwritten or deleted; the image's efficiency score as dive computes it")
	fs.BoolVar(&f.ci, "ci", false, "with --efficiency: exit 1 when a rule below is broken")
	fs.Float64Var(&f.lowestEfficiency, "lowest-efficiency", 0.9, "--ci rule: the lowest efficiency score allowed (0 disables)")
	fs.Int64Var(&f.highestWastedBytes, "highest-wasted-bytes", 0, "--ci rule: the most wasted bytes allowed, dive's count (0 disables)")
	fs.Float64Var(&f.highestUserWastedPc, "highest-user-wasted-percent", 0, "--ci rule: the highest ratio of wasted bytes to the bytes of all layers but the first (0 disables)")
}

// errCIFailed is a broken --ci rule (its message is printed already).
var errCIFailed = errors.New("efficiency check failed")

type efficiencyOut struct {
	*layerstore.Efficiency
	Image string   `json:"image"`
	Pass  *bool    `json:"pass,omitempty"` // with --ci
	Fails []string `json:"failures,omitempty"`
}

func runEfficiency(s *layerstore.Store, img *layerstore.Image, format string, f *efficiencyFlags) error {
	e, err := s.Efficiency(img)
	if err != nil {
		return err
	}
	out := efficiencyOut{Efficiency: e, Image: "sha256:" + img.ID}
	if f.ci {
		if f.lowestEfficiency > 0 && e.Score < f.lowestEfficiency {
			out.Fails = append(out.Fails, fmt.Sprintf("efficiency %.4f is below the lowest allowed %.4f", e.Score, f.lowestEfficiency))
		}
		if f.highestWastedBytes > 0 && e.DiveWastedBytes > f.highestWastedBytes {
			out.Fails = append(out.Fails, fmt.Sprintf("wasted bytes %d exceed the highest allowed %d", e.DiveWastedBytes, f.highestWastedBytes))
		}
		if f.highestUserWastedPc > 0 && e.DiveWastedUserPercent > f.highestUserWastedPc {
			out.Fails = append(out.Fails, fmt.Sprintf("user wasted ratio %.4f exceeds the highest allowed %.4f", e.DiveWastedUserPercent, f.highestUserWastedPc))
		}
		pass := len(out.Fails) == 0
		out.Pass = &pass
	}
	if format == "json" {
		if err := printJSON(out); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "LAYER\tDIFF ID\tSIZE\tADDED\tWASTED\tCREATED BY")
		for i := len(e.Layers) - 1; i >= 0; i-- {
			l := e.Layers[i]
			fmt.Fprintf(tw, "%d/%d\t%s\t%s\t%s\t%s\t%s\n", l.Index, len(e.Layers), layerstore.ShortID(l.DiffID), humanSize(l.Size),
				humanSize(l.Added), humanSize(l.Wasted), oneLine(l.CreatedBy, 50))
		}
		tw.Flush()
		fmt.Printf("\nadded %s, wasted %s (files later overwritten or deleted)\n", humanSize(e.Added), humanSize(e.Wasted))
		fmt.Printf("efficiency score %.6f (dive: %.4f %%), dive wasted bytes %d (%s), user wasted ratio %.6f\n",
			e.Score, 100*e.Score, e.DiveWastedBytes, humanSize(e.DiveWastedBytes), e.DiveWastedUserPercent)
		if n := min(len(e.Inefficient), 10); n > 0 {
			fmt.Println("\nlargest paths held by several layers:")
			tw = tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "COUNT\tTOTAL SPACE\tPATH")
			for _, p := range e.Inefficient[:n] {
				fmt.Fprintf(tw, "%d\t%s\t%s\n", p.Layers, humanSize(p.CumulativeSize), p.Path)
			}
			tw.Flush()
		}
		if out.Pass != nil {
			if *out.Pass {
				fmt.Println("\nPASS")
			} else {
				for _, m := range out.Fails {
					fmt.Println("FAIL:", m)
				}
			}
		}
	}
	if out.Pass != nil && !*out.Pass {
		return errCIFailed
	}
	return nil
}
