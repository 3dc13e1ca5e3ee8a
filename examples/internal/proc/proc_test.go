package proc

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var roles = map[string]func(context.Context) error{
	"reporter": func(ctx context.Context) error {
		var cfg struct{ N int }
		if err := Config(&cfg); err != nil {
			return err
		}
		os.Stderr.WriteString("a log line\n")
		return Result(map[string]int{"n": cfg.N + 1, "dirOK": b2i(Dir() != "")})
	},
	"sleeper": func(ctx context.Context) error {
		Ready()
		time.Sleep(time.Hour) // until killed (it ignores SIGTERM's context)
		return nil
	},
	"graceful": func(ctx context.Context) error {
		Ready()
		<-ctx.Done() // SIGTERM
		return Result("stopped")
	},
	"failer": func(ctx context.Context) error { return errors.New("no luck") },
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestMain(m *testing.M) {
	if Role() != "" {
		os.Exit(RunChild(roles))
	}
	os.Exit(m.Run())
}

// buffer is a strings.Builder safe for concurrent use (extest imports this package).
type buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// A child gets its configuration and directory, its Result reaches the parent, its
// standard error reaches the log with its role and pid.
func TestResultAndLog(t *testing.T) {
	var log buffer
	g, err := NewGroup("proctest", &log)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	p, err := g.Start("reporter", struct{ N int }{41})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]int
	if err := p.Result(ctx(t), &got); err != nil {
		t.Fatal(err)
	}
	if got["n"] != 42 || got["dirOK"] != 1 {
		t.Errorf("result %v", got)
	}
	if err := p.Wait(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if want := "[reporter " + strconv.Itoa(p.Pid()) + "] a log line"; !strings.Contains(log.String(), want) {
		t.Errorf("log %q lacks %q", log.String(), want)
	}
}

// Close kills and reaps every running child and removes the directory.
func TestCloseKillsAndRemoves(t *testing.T) {
	var log buffer
	g, err := NewGroup("proctest", &log)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for range 3 {
		p, err := g.Start("sleeper", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Ready(ctx(t)); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, p.Pid())
	}
	if n := len(Running(g.Dir)); n != 3 {
		t.Fatalf("Running sees %d children, want 3", n)
	}
	if err := os.WriteFile(g.Dir+"/segment", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		// Reaped: the pid is gone (ESRCH), not a zombie.
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d: kill 0 says %v, want ESRCH", pid, err)
		}
	}
	if _, err := os.Stat(g.Dir); !os.IsNotExist(err) {
		t.Errorf("directory still there: %v", err)
	}
	if _, err := g.Start("sleeper", nil); err == nil {
		t.Error("Start after Close succeeded")
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A child that exits before Ready gives ErrExited, with its exit status.
func TestReadyOfAChildThatFailed(t *testing.T) {
	var log buffer
	g, err := NewGroup("proctest", &log)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	p, err := g.Start("failer", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(ctx(t)); !errors.Is(err, ErrExited) {
		t.Fatalf("Ready: %v, want ErrExited", err)
	}
	if !strings.Contains(log.String(), "failer: no luck") {
		t.Errorf("log %q lacks the child's error", log.String())
	}
}

// A Command is started and reaped by someone else; its Ready and TryResult work, and
// SIGTERM ends a child's context.
func TestCommand(t *testing.T) {
	var log buffer
	g, err := NewGroup("proctest", &log)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	cmd, p, err := g.Command("graceful", "graceful-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if err := p.Ready(ctx(t)); err != nil {
		t.Fatal(err)
	}
	var s string
	if ok, _ := p.TryResult(&s); ok {
		t.Fatal("a result before the child sent one")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.TryResult(&s); !ok || err != nil || s != "stopped" {
		t.Fatalf("TryResult: %v %v %q", ok, err, s)
	}
}
