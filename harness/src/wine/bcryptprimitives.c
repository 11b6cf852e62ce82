/* bcryptprimitives.dll for Wine 8.0 (Debian bookworm), which has none:
   Rust's std (1.78 and later) imports ProcessPrng from it, so without this
   no Rust program starts. RtlGenRandom (advapi32's SystemFunction036) gives
   the same random bytes. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
