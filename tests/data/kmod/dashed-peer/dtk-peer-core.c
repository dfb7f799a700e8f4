// SPDX-License-Identifier: GPL-2.0
/* A test module whose file name has a dash: modpost writes depends=dtk-peer-core into
 * its users, while the kernel and modprobe call it dtk_peer_core. */
#include <linux/module.h>

int dtk_peer_answer(void)
{
	return 42;
}
EXPORT_SYMBOL_GPL(dtk_peer_answer);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dtk test module exporting a symbol, named with a dash");
