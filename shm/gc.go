package shm

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shmq/shmq/internal/layout"
)

// TempGrace is how old a temporary must be before GC may remove it, on top of its creator
// being dead: it covers the moment between creating the file and locking it.
const TempGrace = 10 * time.Second

// Collected is a file that GC removed, or would remove on a dry run.
type Collected struct {
	Name      string
	Temporary bool   // a segment under construction whose creator died
	Reason    string // why it is garbage
}

// GC removes, from the options' directory, what crashed processes left behind:
//   - segments with at least one dead peer and no live one (a segment whose peers all
//     detached cleanly, or that nobody has attached to yet, is kept: it was left on purpose);
//   - temporaries of Create (".shmq-tmp-*") whose creator is dead, older than TempGrace.
//
// Files that are not valid segments owned by a trusted user are never touched. With dryRun it
// only reports. Several GCs may run at once (from several processes): each file is removed,
// and reported, by one of them. A process may attach to a segment between the check and the removal; it
// keeps its mapping but the name is gone, so run GC when the segments' users are quiet.
func GC(opts Options, dryRun bool) ([]Collected, error) {
	dir := opts.ResolvedDir()
	names, err := dirNames(dir)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var out []Collected
	for _, n := range names {
		var c *Collected
		switch {
		case isTemporary(n):
			c = staleTemporary(dir, n, opts)
		case ValidateName(n) == nil:
			c = abandonedSegment(n, opts)
		}
		if c == nil {
			continue
		}
		if !dryRun {
			if err := removeAt(dir, n); errors.Is(err, ErrNotExist) {
				continue // another cleaner removed it first
			} else if err != nil {
				return out, err
			}
		}
		out = append(out, *c)
	}
	return out, nil
}

func abandonedSegment(name string, opts Options) *Collected {
	s, err := Inspect(name, Options{Dir: opts.Dir, TrustedOwners: opts.TrustedOwners})
	if err != nil {
		return nil
	}
	defer s.Close()
	peers, err := s.Peers()
	if err != nil || len(peers) == 0 {
		return nil
	}
	for _, p := range peers {
		if p.Alive {
			return nil
		}
	}
	return &Collected{Name: name, Reason: fmt.Sprintf("all %d peers dead", len(peers))}
}

func staleTemporary(dir, name string, opts Options) *Collected {
	dirfd, err := openDir(dir)
	if err != nil {
		return nil
	}
	defer closeFD(dirfd)
	lst, isLink, err := lstatAt(dirfd, name)
	if err != nil || isLink || !lst.regular || time.Since(lst.mtime) < TempGrace {
		return nil
	}
	fd, err := openAt(dirfd, name, false)
	if err != nil {
		return nil
	}
	defer closeFD(fd)
	st, err := fstat(fd)
	if err != nil || st.ino != lst.ino || st.checkTrusted(opts.TrustedOwners) != nil {
		return nil
	}
	held, err := byteLocked(fd, int64(layout.PeerOffset(0)))
	if err != nil || held {
		return nil
	}
	return &Collected{Name: name, Temporary: true, Reason: "creator died during creation"}
}
