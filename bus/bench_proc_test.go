package bus

import "github.com/shmq/shmq/internal/proctest"

func roleBenchSub(c *proctest.Child) error { return nil }
func roleRawSub(c *proctest.Child) error   { return nil }
