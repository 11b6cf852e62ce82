/* Stand-in for Windows 10's bcryptprimitives.dll, which Wine 8.0 lacks and
 * Rust's std imports (ProcessPrng) for random numbers: without it every Rust
 * test exe fails to load under Wine (exit 53). Build and install with:
 *   x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll \
 *       bcryptprimitives.c bcryptprimitives.def -ladvapi32
 *   cp bcryptprimitives.dll ~/.wine/drive_c/windows/system32/
 */
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk; len -= chunk;
    }
    return TRUE;
}
