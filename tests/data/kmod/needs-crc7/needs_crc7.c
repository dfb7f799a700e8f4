// SPDX-License-Identifier: GPL-2.0
/* A test module that needs an in-tree module (crc7): what KMM's in-tree dependency
 * pattern is about. Loading it proves crc7 was loaded first. */
#include <linux/crc7.h>
#include <linux/module.h>

static int __init needs_crc7_init(void)
{
	static const u8 data[] = { 'd', 't', 'k' };

	pr_info("needs_crc7: crc7 of 'dtk' is 0x%02x\n", crc7_be(0, data, sizeof(data)));
	return 0;
}

static void __exit needs_crc7_exit(void)
{
}

module_init(needs_crc7_init);
module_exit(needs_crc7_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dtk test module depending on the in-tree crc7 module");
