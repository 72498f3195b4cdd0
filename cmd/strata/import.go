package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/layerstore"
)

var importFlags struct {
	tag      string
	parallel int
	maxRatio int64
}

func init() {
	register(&command{
		name:    "import",
		usage:   "import FILE|DIR|- [--tag NAME:TAG]",
		summary: "import a docker-archive, OCI layout (dir or tar) or legacy v1 image (tar may be gzip/zstd; - is stdin)",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&importFlags.tag, "tag", "", "also tag the image NAME[:TAG] (archive must hold one image)")
			fs.IntVar(&importFlags.parallel, "parallel", 0, "layers extracted at once (default 3)")
			fs.Int64Var(&importFlags.maxRatio, "max-ratio", 0, "decompression ratio cap (default 1000, -1 disables)")
		},
		run: runImport,
	})
}

// isTerminal reports whether f is a terminal with a width (bars need one;
// a pty without a size, as under script(1), gets log lines).
func isTerminal(f *os.File) bool {
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return false
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	return err == nil && ws.Col > 0
}

func runImport(g *globals, args []string) error {
	if len(args) != 1 {
		return usageError{"need exactly one FILE or DIR"}
	}
	s, err := layerstore.Open(g.root)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := layerstore.ImportOptions{Tag: importFlags.tag, Parallel: importFlags.parallel, MaxRatio: importFlags.maxRatio, Log: g.log}
	var bars *barProgress
	if isTerminal(os.Stderr) && g.logFormat == "text" {
		bars = newBarProgress()
		opts.Progress = bars.event
	} else {
		opts.Progress = logProgress(g.log)
	}
	start := time.Now()
	res, err := s.Import(ctx, args[0], opts)
	if bars != nil {
		bars.wait()
	}
	if err != nil {
		return err
	}
	g.log.WithFields(logrus.Fields{"format": res.Format, "images": len(res.Images), "extracted": res.Extracted,
		"reused": res.Reused, "bytes": res.Bytes, "seconds": fmt.Sprintf("%.2f", time.Since(start).Seconds())}).Info("import done")
	for _, img := range res.Images {
		name := strings.Join(img.RepoTags, ", ")
		if name == "" {
			name = "<none>"
		}
		fmt.Printf("Loaded image ID: sha256:%s (%s)\n", img.ID, name)
	}
	return nil
}

// logProgress reports layers as log lines (stderr is not a terminal).
func logProgress(log *logrus.Logger) func(layerstore.ProgressEvent) {
	return func(ev layerstore.ProgressEvent) {
		f := log.WithField("layer", ev.Layer)
		switch ev.State {
		case layerstore.LayerStarted:
			f.WithField("bytes", ev.Total).Info("extracting layer")
		case layerstore.LayerDone:
			f.Info("layer extracted and verified")
		case layerstore.LayerVerified:
			f.Info("layer already stored; blob verified")
		case layerstore.LayerReused:
			f.Info("layer already stored")
		case layerstore.LayerFailed:
			// Debug only: the import's error, printed once at the end,
			// already names the layer and the problem.
			f.WithError(ev.Err).Debug("layer failed")
		}
	}
}

// barProgress draws one mpb bar per layer.
type barProgress struct {
	p    *mpb.Progress
	mu   sync.Mutex
	bars map[string]*mpb.Bar
}

func newBarProgress() *barProgress {
	return &barProgress{p: mpb.New(mpb.WithOutput(os.Stderr), mpb.WithWidth(40)), bars: map[string]*mpb.Bar{}}
}

func shortLayer(l string) string {
	l = strings.TrimPrefix(l, "sha256:")
	if len(l) > 12 && !strings.Contains(l, "/") {
		return l[:12]
	}
	if len(l) > 24 {
		return "…" + l[len(l)-23:]
	}
	return l
}

func (b *barProgress) event(ev layerstore.ProgressEvent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bar := b.bars[ev.Layer]
	switch ev.State {
	case layerstore.LayerStarted:
		b.bars[ev.Layer] = b.p.AddBar(ev.Total,
			mpb.PrependDecorators(decor.Name(shortLayer(ev.Layer), decor.WC{W: 14, C: decor.DindentRight})),
			mpb.AppendDecorators(decor.OnComplete(decor.CountersKibiByte("% .1f / % .1f"), "done")))
	case layerstore.LayerProgress:
		if bar != nil {
			bar.SetCurrent(ev.Done)
		}
	case layerstore.LayerDone, layerstore.LayerVerified:
		if bar != nil {
			bar.SetTotal(ev.Total, true)
		}
	case layerstore.LayerReused:
		fmt.Fprintf(b.p, "%s already stored\n", shortLayer(ev.Layer))
	case layerstore.LayerFailed:
		if bar != nil {
			bar.Abort(false)
		}
	}
}

func (b *barProgress) wait() {
	b.mu.Lock()
	for _, bar := range b.bars {
		if !bar.Completed() {
			bar.Abort(false)
		}
	}
	b.mu.Unlock()
	b.p.Wait()
}
