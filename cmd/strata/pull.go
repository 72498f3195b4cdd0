package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/layerstore"
)

var pullFlags struct {
	platform string
	jobs     int
	insecure bool
	maxRatio int64
	format   string
}

func init() {
	register(&command{
		name:    "pull",
		usage:   "pull REF [--platform OS/ARCH[/VARIANT]] [--jobs N] [--insecure]",
		summary: "pull an image from a registry (registry/repo:tag or @digest), streaming each layer into the store",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&pullFlags.platform, "platform", "", "platform to choose from a manifest list (default: this host's, "+hostPlatform()+")")
			fs.IntVar(&pullFlags.jobs, "jobs", 4, "layers downloaded at once")
			addInsecureFlag(fs, &pullFlags.insecure)
			fs.Int64Var(&pullFlags.maxRatio, "max-ratio", 0, "decompression ratio cap (default 1000, -1 disables)")
			fs.StringVar(&pullFlags.format, "format", "text", "output: text, or json for scripts")
		},
		run: runPull,
	})
}

func hostPlatform() string {
	p := layerstore.HostPlatform()
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func addInsecureFlag(fs *pflag.FlagSet, p *bool) {
	fs.BoolVar(p, "insecure", false, "allow plain HTTP and unverified TLS (also per registry: "+layerstore.RegistriesConfigPath()+")")
}

// registryOptions reads the registries config file and applies --insecure.
func registryOptions(insecure bool) (layerstore.RegistryOptions, error) {
	o := layerstore.RegistryOptions{Insecure: insecure, UserAgent: "strata/" + version}
	cfg, err := layerstore.LoadRegistriesConfig(layerstore.RegistriesConfigPath())
	if err != nil {
		return o, err
	}
	o.InsecureRegistries = cfg.InsecureRegistries
	return o, nil
}

type pullOut struct {
	Ref        string  `json:"ref"`
	Digest     string  `json:"digest"`
	Manifest   string  `json:"manifest"`
	Platform   string  `json:"platform,omitempty"`
	ID         string  `json:"id"`
	Downloaded int     `json:"downloaded"`
	Reused     int     `json:"reused"`
	Bytes      int64   `json:"bytes"`
	Extracted  int64   `json:"extracted"`
	Seconds    float64 `json:"seconds"`
}

func runPull(g *globals, args []string) error {
	if len(args) != 1 {
		return usageError{"need exactly one REF"}
	}
	if pullFlags.format != "text" && pullFlags.format != "json" {
		return usageError{fmt.Sprintf("--format: %q is not text or json", pullFlags.format)}
	}
	if pullFlags.jobs < 1 {
		return usageError{"--jobs must be at least 1"}
	}
	s, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	ro, err := registryOptions(pullFlags.insecure)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := pull(ctx, g, s, args[0], layerstore.PullOptions{Registry: ro, Platform: pullFlags.platform, Jobs: pullFlags.jobs, MaxRatio: pullFlags.maxRatio})
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	if pullFlags.format == "json" {
		return printJSON(pullOut{Ref: layerstore.FamiliarRef(res.Ref), Digest: res.Digest, Manifest: res.Manifest, Platform: res.Platform,
			ID: "sha256:" + res.Image.ID, Downloaded: res.Downloaded, Reused: res.Reused, Bytes: res.Bytes, Extracted: res.Extracted, Seconds: secs})
	}
	fmt.Printf("Digest: %s\n", res.Digest)
	fmt.Printf("Pulled %s: image ID sha256:%s (%d layers downloaded, %s; %d already stored)\n",
		layerstore.FamiliarRef(res.Ref), res.Image.ID, res.Downloaded, humanSize(res.Bytes), res.Reused)
	return nil
}

// pull runs Store.Pull with progress bars on a terminal, log lines otherwise.
func pull(ctx context.Context, g *globals, s *layerstore.Store, ref string, o layerstore.PullOptions) (*layerstore.PullResult, error) {
	o.Log = g.log
	var bars *barProgress
	if isTerminal(os.Stderr) && g.logFormat == "text" {
		bars = newBarProgress()
		o.Progress = bars.event
	} else {
		o.Progress = pullLogProgress(g.log)
	}
	start := time.Now()
	res, err := s.Pull(ctx, ref, o)
	if bars != nil {
		bars.wait()
	}
	if err != nil {
		return nil, err
	}
	g.log.WithFields(logrus.Fields{"ref": layerstore.FamiliarRef(res.Ref), "downloaded": res.Downloaded, "reused": res.Reused,
		"bytes": res.Bytes, "seconds": fmt.Sprintf("%.2f", time.Since(start).Seconds())}).Debug("pull done")
	return res, nil
}

func pullLogProgress(log *logrus.Logger) func(layerstore.ProgressEvent) {
	return func(ev layerstore.ProgressEvent) {
		f := log.WithField("layer", ev.Layer)
		switch ev.State {
		case layerstore.LayerStarted:
			f.WithField("bytes", ev.Total).Info("downloading layer")
		case layerstore.LayerDone:
			f.Info("layer downloaded, verified and extracted")
		case layerstore.LayerReused:
			f.Info("layer already stored")
		case layerstore.LayerFailed:
			f.Debugf("layer failed: %v", ev.Err) // the command's error says it once
		}
	}
}
