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

var pushFlags struct {
	compression string
	force       bool
	manifest    string
	jobs        int
	insecure    bool
	format      string
}

func init() {
	register(&command{
		name:    "push",
		usage:   "push REF [DEST] [--compression gzip|zstd|none [--force-compression]] [--manifest-format oci|docker] [--jobs N] [--insecure]",
		summary: "upload an image from the store to a registry (DEST registry/repo[:tag]; default REF itself)",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&pushFlags.compression, "compression", "gzip", "compression of layers the registry does not have yet: gzip, zstd or none")
			fs.BoolVar(&pushFlags.force, "force-compression", false, "use only blobs of that compression, even when the registry has the layer in another")
			fs.StringVar(&pushFlags.manifest, "manifest-format", "oci", "manifest format: oci or docker (v2 schema 2)")
			fs.IntVar(&pushFlags.jobs, "jobs", 4, "layers uploaded at once")
			addInsecureFlag(fs, &pushFlags.insecure)
			fs.StringVar(&pushFlags.format, "format", "text", "output: text, or json for scripts")
		},
		run: runPush,
	})
}

type pushOut struct {
	Ref      string  `json:"ref"`
	Digest   string  `json:"digest"`
	ID       string  `json:"id"`
	Uploaded int     `json:"uploaded"`
	Existing int     `json:"existing"`
	Mounted  int     `json:"mounted"`
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"seconds"`
}

func runPush(g *globals, args []string) error {
	if len(args) != 1 && len(args) != 2 {
		return usageError{"need REF and optionally DEST"}
	}
	if pushFlags.format != "text" && pushFlags.format != "json" {
		return usageError{fmt.Sprintf("--format: %q is not text or json", pushFlags.format)}
	}
	if pushFlags.jobs < 1 {
		return usageError{"--jobs must be at least 1"}
	}
	dest := args[0]
	if len(args) == 2 {
		dest = args[1]
	}
	s, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	img, err := s.Resolve(args[0])
	if err != nil {
		return err
	}
	ro, err := registryOptions(pushFlags.insecure)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := layerstore.PushOptions{Registry: ro, Compression: pushFlags.compression, ForceCompression: pushFlags.force, Format: pushFlags.manifest, Jobs: pushFlags.jobs, Log: g.log}
	var bars *barProgress
	if isTerminal(os.Stderr) && g.logFormat == "text" {
		bars = newBarProgress()
		o.Progress = func(ev layerstore.ProgressEvent) {
			if ev.State == layerstore.LayerReused {
				fmt.Fprintf(bars.p, "%s skipped: the registry has it\n", shortLayer(ev.Layer))
				return
			}
			bars.event(ev)
		}
	} else {
		o.Progress = pushLogProgress(g.log)
	}
	start := time.Now()
	res, err := s.Push(ctx, img, dest, o)
	if bars != nil {
		bars.wait()
	}
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	if pushFlags.format == "json" {
		return printJSON(pushOut{Ref: layerstore.FamiliarRef(res.Ref), Digest: res.Digest, ID: "sha256:" + img.ID,
			Uploaded: res.Uploaded, Existing: res.Existing, Mounted: res.Mounted, Bytes: res.Bytes, Seconds: secs})
	}
	fmt.Printf("Pushed %s: digest %s (%d layers uploaded, %s; %d already there; %d mounted from another repository)\n",
		layerstore.FamiliarRef(res.Ref), res.Digest, res.Uploaded, humanSize(res.Bytes), res.Existing, res.Mounted)
	return nil
}

func pushLogProgress(log *logrus.Logger) func(layerstore.ProgressEvent) {
	return func(ev layerstore.ProgressEvent) {
		f := log.WithField("layer", ev.Layer)
		switch ev.State {
		case layerstore.LayerStarted:
			f.WithField("bytes", ev.Total).Info("uploading layer")
		case layerstore.LayerDone:
			f.Info("layer uploaded")
		case layerstore.LayerFailed:
			f.Debugf("layer failed: %v", ev.Err)
		}
	}
}
