package supervise_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/shmq/shmq/backoff"
	"github.com/shmq/shmq/supervise"
)

// One worker that fails its first run (exit status 3) and succeeds on the next: the
// supervisor restarts it after the backoff delay, then leaves it done.
func Example() {
	dir, err := os.MkdirTemp("", "supervise-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	marker := filepath.Join(dir, "ran")
	done := make(chan struct{})

	s, err := supervise.New(func(i int) *exec.Cmd {
		// A real factory starts the worker program; this one fails once.
		return exec.Command("sh", "-c", `if [ -e "$1" ]; then exit 0; fi; : > "$1"; exit 3`, "worker", marker)
	}, supervise.Options{
		Workers: 1,
		Restart: backoff.Policy{Base: 10 * time.Millisecond, Factor: 1},
		OnEvent: func(e supervise.Event) {
			switch e.Kind {
			case supervise.Exited:
				fmt.Printf("worker %d exited with status %d\n", e.Worker, e.ExitCode)
				if e.ExitCode == 0 {
					close(done)
				}
			default:
				fmt.Printf("worker %d: %v\n", e.Worker, e.Kind)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	<-done
	if err := s.Stop(context.Background()); err != nil {
		log.Fatal(err)
	}
	st := s.Stats()
	fmt.Printf("starts %d, restarts %d, failures %d\n", st.Starts, st.Restarts, st.Failures)
	// Output:
	// worker 0: started
	// worker 0 exited with status 3
	// worker 0: restarting
	// worker 0: started
	// worker 0 exited with status 0
	// starts 2, restarts 1, failures 1
}
