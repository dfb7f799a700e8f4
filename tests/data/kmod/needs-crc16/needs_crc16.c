// SPDX-License-Identifier: GPL-2.0
/* Needs crc16, a module in Debian's standard kernels but built into the cloud kernels
 * (6.12 cloud's modules.builtin): built on standard, it says depends=crc16. */
#include <linux/crc16.h>
#include <linux/module.h>

static int __init needs_crc16_init(void)
{
	static const u8 data[] = { 'd', 't', 'k' };

	pr_info("needs_crc16: crc16 of 'dtk' is 0x%04x\n", crc16(0, data, sizeof(data)));
	return 0;
}

static void __exit needs_crc16_exit(void)
{
}

module_init(needs_crc16_init);
module_exit(needs_crc16_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dtk test module depending on crc16 (built into the cloud kernels)");
