package shm_test

import (
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/shmq/shmq/shm"
)

// exampleKind is this example's segment kind; a real one is defined and registered by the
// package that lays out its data (package ring registers spsc, mpmc and topic).
const exampleKind shm.Kind = 0x5e9

// Two handles on one segment, as two processes would have: what one writes in the data
// region the other reads, each is a peer with a liveness lock, and a read-only look
// (shm.Inspect, what shmctl does) changes nothing.
func Example() {
	dir, err := os.MkdirTemp("", "shm-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The creator builds the file under a temporary name and renames it into place, so
	// nobody ever opens a half-made segment; it removes the name when it closes.
	a, err := shm.Create("greeting", shm.Spec{Kind: exampleKind, DataSize: 4096}, shm.Options{Dir: dir, RemoveOnClose: true})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	copy(a.Data(), "hello from a")

	b, err := shm.Open("greeting", shm.Options{Dir: dir, Kind: exampleKind}) // validated: magic, version, checksum, kind
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("b reads %q\n", b.Data()[:12])

	peers, _ := b.Peers()
	fmt.Println("peers:", len(peers), "alive:", peers[0].Alive && peers[1].Alive)
	b.Close() // b's peer entry is given back

	look, err := shm.Inspect("greeting", shm.Options{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	n, _ := look.LivePeers()
	fmt.Println("inspected:", look.Descriptor().DataSize, "data bytes,", n, "live peer, read-only:", look.ReadOnly())
	look.Close()

	a.Close()
	_, err = shm.Open("greeting", shm.Options{Dir: dir})
	fmt.Println("gone after the creator closed:", errors.Is(err, shm.ErrNotExist))
	// Output:
	// b reads "hello from a"
	// peers: 2 alive: true
	// inspected: 4096 data bytes, 1 live peer, read-only: true
	// gone after the creator closed: true
}
