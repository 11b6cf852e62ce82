; The coLinux installer for 64-bit Windows.
;
; Built with Debian's native makensis (never under Wine) by
; colinux_packaging::nsis::build, which passes every input as a define:
;   -DVERSION=0.1.0 -DVERSION_QUAD=0.1.0.0 -DOUTFILE=…-setup.exe
;   -DDAEMON_EXE=… -DCONSOLE_EXE=… -DDEFAULT_CONF=…/windows/colinux.conf
;   -DKERNEL_I386=…/bzImage [-DKERNEL_X86_64=…/bzImage]
;   [-DIMAGE_DEBIAN=…/debian.ext4.zst]  (the stock image, and a guest made from it)
;   [-DDOC_1=…/README.md -DDOC_1_NAME=README.md … up to DOC_16]
;   [-DUNINSTALLER_SIGN_SCRIPT=…/sign.sh]  (signs the uninstaller at build time)
;
; Silent mass deployment, as coMosix did: `setup.exe /S [/D=C:\coLinux]`
; reads colinux.ini (else comosix.ini) beside setup.exe. colinux-daemon
; turns it into colinux.conf with the config crate's own rules
; (--from-ini) before anything is copied; an error there ends the install
; with exit code 2 and nothing installed. See runtime/packaging/README.md.
;
; With the image, the installer creates a guest from it (colinux-daemon
; --create, in %ProgramData%\coLinux, where uninstalling leaves it), as the
; ini's [guest] says (name, size, the user's own image; create = no for
; none), and colinux.conf, which the Start menu starts, points at it.
;
; Exit codes: 0 installed; 1 cancelled; 2 the ini was refused, nothing
; installed; 3 installed, but the Windows service could not be created;
; 4 installed, but the guest could not be created.

Unicode true
Target amd64-unicode
; Not solid: the image is compressed already and is stored as it is.
SetCompressor lzma
RequestExecutionLevel admin
ManifestSupportedOS all

!macro Require NAME
  !ifndef ${NAME}
    !error "${NAME} is not defined: build with colinux_packaging::nsis::build (makensis -D${NAME}=…)"
  !endif
!macroend
!insertmacro Require VERSION
!insertmacro Require VERSION_QUAD
!insertmacro Require OUTFILE
!insertmacro Require DAEMON_EXE
!insertmacro Require CONSOLE_EXE
!insertmacro Require DEFAULT_CONF
!insertmacro Require KERNEL_I386

!ifdef UNINSTALLER_SIGN_SCRIPT
  ; NSIS 3.08: the uninstaller is signed before it is stored, so the
  ; uninstall.exe that WriteUninstaller writes carries the signature.
  !uninstfinalize '/bin/sh "${UNINSTALLER_SIGN_SCRIPT}" "%1"' = 0
!endif

!define PRODUCT "coLinux"
!define REGKEY "Software\coLinux"
!define UNINST_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\coLinux"
!define QEMU_URL "https://www.qemu.org/download/#windows"
!define LOG "$TEMP\colinux-setup.log"

Name "${PRODUCT} ${VERSION}"
OutFile "${OUTFILE}"
InstallDir "$PROGRAMFILES64\coLinux"
InstallDirRegKey HKLM "${REGKEY}" "InstallDir"
BrandingText "${PRODUCT} ${VERSION}"
ShowInstDetails show

VIProductVersion "${VERSION_QUAD}"
VIAddVersionKey "ProductName" "${PRODUCT}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "FileDescription" "${PRODUCT} ${VERSION} setup"
VIAddVersionKey "LegalCopyright" "GPL-2.0; see COPYING"

!include "MUI2.nsh"
!include "LogicLib.nsh"
!include "FileFunc.nsh"

!define MUI_ABORTWARNING
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Var IniFile      ; colinux.ini or comosix.ini beside setup.exe, or empty
Var QemuPath     ; QEMU's qemu-system-i386.exe when found, or empty
Var ServiceName  ; the service to create, or empty
Var GuestName    ; the guest to create from the image, or empty
Var GuestOptions ; the ini's --create options (--size, --image)
Var DataDir      ; where guests live: %ProgramData%\coLinux, as the daemon has it

; The payload, written once for the installer (File) and once for the
; uninstaller (Delete): the uninstaller removes exactly these names.
!macro OptFile DEF NAME
  !ifdef ${DEF}
    File "/oname=${NAME}" "${${DEF}}"
  !endif
!macroend
!macro OptDelete DEF NAME
  !ifdef ${DEF}
    Delete "$INSTDIR\${NAME}"
  !endif
!macroend
!macro OptDoc OP N
  !ifdef DOC_${N}
    !insertmacro ${OP} DOC_${N} "${DOC_${N}_NAME}"
  !endif
!macroend
!macro Payload OP
  !insertmacro ${OP} DAEMON_EXE colinux-daemon.exe
  !insertmacro ${OP} CONSOLE_EXE colinux-console.exe
  !insertmacro ${OP} KERNEL_I386 bzImage-i386
  !insertmacro ${OP} KERNEL_X86_64 bzImage-x86_64
  !insertmacro OptDoc ${OP} 1
  !insertmacro OptDoc ${OP} 2
  !insertmacro OptDoc ${OP} 3
  !insertmacro OptDoc ${OP} 4
  !insertmacro OptDoc ${OP} 5
  !insertmacro OptDoc ${OP} 6
  !insertmacro OptDoc ${OP} 7
  !insertmacro OptDoc ${OP} 8
  !insertmacro OptDoc ${OP} 9
  !insertmacro OptDoc ${OP} 10
  !insertmacro OptDoc ${OP} 11
  !insertmacro OptDoc ${OP} 12
  !insertmacro OptDoc ${OP} 13
  !insertmacro OptDoc ${OP} 14
  !insertmacro OptDoc ${OP} 15
  !insertmacro OptDoc ${OP} 16
!macroend

; The install details, and the same lines in $TEMP\colinux-setup.log,
; which is all a silent install shows.
!macro Log TEXT
  DetailPrint "${TEXT}"
  Push "${TEXT}"
  Call AppendLog
!macroend
Function AppendLog
  Exch $0
  Push $1
  FileOpen $1 "${LOG}" a
  FileSeek $1 0 END
  FileWrite $1 "$0$\r$\n"
  FileClose $1
  Pop $1
  Pop $0
FunctionEnd

; The value of the line KEY=value in a command's output, or "".
; Push the output, then KEY; pops the value. Registers are kept.
Function OutputValue
  Exch $1 ; KEY
  Exch
  Exch $0 ; the output
  Push $2
  Push $3
  Push $4
  StrCpy $0 "$\n$0"
  StrCpy $1 "$\n$1="
  StrLen $3 $1
  StrCpy $4 0
  find:
    StrCpy $2 $0 $3 $4
    StrCmp $2 "" none
    StrCmp $2 $1 found
    IntOp $4 $4 + 1
    Goto find
  found:
    IntOp $4 $4 + $3
    StrCpy $0 $0 "" $4
    StrCpy $4 0
  cut:
    StrCpy $2 $0 1 $4
    StrCmp $2 "" end
    StrCmp $2 "$\n" end
    StrCmp $2 "$\r" end
    IntOp $4 $4 + 1
    Goto cut
  end:
    StrCpy $0 $0 $4
    Goto done
  none:
    StrCpy $0 ""
  done:
  Pop $4
  Pop $3
  Pop $2
  Exch $0
  Exch
  Pop $1
FunctionEnd

; $0 without its trailing CR/LF.
Function TrimNewlines
  Exch $0
  Push $1
  loop:
    StrCpy $1 $0 1 -1
    ${If} $1 == "$\n"
    ${OrIf} $1 == "$\r"
      StrCpy $0 $0 -1
      Goto loop
    ${EndIf}
  Pop $1
  Exch $0
FunctionEnd

Function .onInit
  StrCpy $GuestName "debian"
  StrCpy $GuestOptions ""
  ReadEnvStr $DataDir "ProgramData"
  StrCpy $DataDir "$DataDir\coLinux"
  StrCpy $IniFile ""
  ${If} ${FileExists} "$EXEDIR\colinux.ini"
    StrCpy $IniFile "$EXEDIR\colinux.ini"
  ${ElseIf} ${FileExists} "$EXEDIR\comosix.ini"
    StrCpy $IniFile "$EXEDIR\comosix.ini"
  ${EndIf}
  ; QEMU's own installer records its folder; it may be a 32- or 64-bit one.
  StrCpy $QemuPath ""
  SetRegView 64
  ReadRegStr $0 HKLM "SOFTWARE\QEMU" "Install_Dir"
  ${If} $0 == ""
    SetRegView 32
    ReadRegStr $0 HKLM "SOFTWARE\QEMU" "Install_Dir"
  ${EndIf}
  SetRegView 64
  ${If} $0 == ""
    StrCpy $0 "$PROGRAMFILES64\qemu"
  ${EndIf}
  ${If} ${FileExists} "$0\qemu-system-i386.exe"
    StrCpy $QemuPath "$0\qemu-system-i386.exe"
  ${EndIf}
FunctionEnd

Section "coLinux (daemon, console, kernels)" SecMain
  SectionIn RO
  ; File would store each input's modification time, which changes with
  ; every build and checkout: the installer would not be reproducible.
  SetDateSave off
  Delete "${LOG}"
  !insertmacro Log "coLinux ${VERSION} into $INSTDIR"

  ; The ini first, before anything is copied: colinux-daemon applies the
  ; config rules and writes the config to a temporary folder.
  ${If} $IniFile != ""
    !insertmacro Log "reading $IniFile"
    InitPluginsDir
    SetOutPath "$PLUGINSDIR"
    File "/oname=colinux-daemon.exe" "${DAEMON_EXE}"
    StrCpy $1 ""
    ${If} $QemuPath != ""
      StrCpy $1 '"qemu=$QemuPath"'
    ${EndIf}
    nsExec::ExecToStack '"$PLUGINSDIR\colinux-daemon.exe" --from-ini "$IniFile" --write-config "$PLUGINSDIR\colinux.conf" "kernel=$INSTDIR\bzImage-i386" $1'
    Pop $0
    Pop $1
    Push $1
    Call TrimNewlines
    Pop $1
    ${If} $0 != "0"
      !insertmacro Log "$IniFile was refused (exit code $0), nothing was installed: $1"
      MessageBox MB_ICONSTOP|MB_OK "$IniFile was refused, so nothing was installed:$\r$\n$\r$\n$1" /SD IDOK
      SetOutPath "$TEMP"
      SetErrorLevel 2
      Abort
    ${EndIf}
    Push $1
    Push "service"
    Call OutputValue
    Pop $ServiceName
    Push $1
    Push "guest"
    Call OutputValue
    Pop $GuestName
    Push $1
    Push "guest_options"
    Call OutputValue
    Pop $GuestOptions
  ${EndIf}

  SetOutPath "$INSTDIR"
  !insertmacro Payload OptFile
  ${If} $IniFile != ""
    CopyFiles /SILENT "$PLUGINSDIR\colinux.conf" "$INSTDIR\colinux.conf"
    !insertmacro Log "wrote $INSTDIR\colinux.conf from $IniFile"
  ${ElseIf} ${FileExists} "$INSTDIR\colinux.conf"
    !insertmacro Log "kept the existing $INSTDIR\colinux.conf"
  ${Else}
    File "/oname=colinux.conf" "${DEFAULT_CONF}"
    FileOpen $0 "$INSTDIR\colinux.conf" a
    FileSeek $0 0 END
    ${If} $QemuPath != ""
      FileWrite $0 'qemu="$QemuPath"$\r$\n'
    ${Else}
      FileWrite $0 "# WARNING: the installer did not find QEMU for Windows: get it from$\r$\n# ${QEMU_URL}$\r$\n"
    ${EndIf}
    FileClose $0
    !insertmacro Log "wrote the default $INSTDIR\colinux.conf"
  ${EndIf}
  ; An ini's config names QEMU, or says in a comment that it was not found.
  ${If} $QemuPath != ""
    !insertmacro Log "QEMU: $QemuPath"
  ${ElseIf} $IniFile == ""
    !insertmacro Log "warning: QEMU for Windows was not found: get it from ${QEMU_URL} and set qemu= in colinux.conf"
    MessageBox MB_ICONINFORMATION|MB_OK "QEMU for Windows was not found.$\r$\n$\r$\ncoLinux runs its guests on QEMU: install it from ${QEMU_URL}, then set qemu= in $INSTDIR\colinux.conf (the QEMU installer's default folder is found by itself on the next install)." /SD IDOK
  ${EndIf}

  WriteUninstaller "$INSTDIR\uninstall.exe"
  WriteRegStr HKLM "${REGKEY}" "InstallDir" "$INSTDIR"
  WriteRegStr HKLM "${UNINST_KEY}" "DisplayName" "${PRODUCT} ${VERSION}"
  WriteRegStr HKLM "${UNINST_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKLM "${UNINST_KEY}" "Publisher" "${PRODUCT}"
  WriteRegStr HKLM "${UNINST_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKLM "${UNINST_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKLM "${UNINST_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKLM "${UNINST_KEY}" "NoModify" 1
  WriteRegDWORD HKLM "${UNINST_KEY}" "NoRepair" 1

  SetShellVarContext all
  CreateDirectory "$SMPROGRAMS\coLinux"
  CreateShortcut "$SMPROGRAMS\coLinux\coLinux.lnk" "$INSTDIR\colinux-daemon.exe" '@colinux.conf' "$INSTDIR\colinux-daemon.exe"
  CreateShortcut "$SMPROGRAMS\coLinux\coLinux console.lnk" "$INSTDIR\colinux-console.exe" 'colinux'
  CreateShortcut "$SMPROGRAMS\coLinux\coLinux configuration.lnk" "$WINDIR\notepad.exe" '"$INSTDIR\colinux.conf"'
  CreateShortcut "$SMPROGRAMS\coLinux\Uninstall coLinux.lnk" "$INSTDIR\uninstall.exe"
SectionEnd

!ifdef IMAGE_DEBIAN
Section "Debian guest (the stock image, and a guest made from it)" SecImage
  SetOutPath "$INSTDIR\images"
  SetCompress off
  File "/oname=debian.ext4.zst" "${IMAGE_DEBIAN}"
  SetCompress auto
  SetOutPath "$INSTDIR"
  ${If} $GuestName == ""
    !insertmacro Log "$IniFile boots a root of its own (or says create = no): no guest created"
  ${ElseIf} ${FileExists} "$DataDir\$GuestName.conf"
    !insertmacro Log "kept the existing guest $GuestName in $DataDir"
    Call PointAtGuest
  ${Else}
    ; The ini's config (credentials, memory, QEMU…) becomes the guest's.
    ${If} $IniFile != ""
      StrCpy $1 '"@$INSTDIR\colinux.conf"'
    ${ElseIf} $QemuPath != ""
      StrCpy $1 '"qemu=$QemuPath"'
    ${Else}
      StrCpy $1 ""
    ${EndIf}
    !insertmacro Log "creating the guest $GuestName in $DataDir"
    nsExec::ExecToStack '"$INSTDIR\colinux-daemon.exe" --create $GuestName --data-dir "$DataDir" $GuestOptions $1'
    Pop $0
    Pop $1
    ${If} $0 == "0"
      !insertmacro Log "$1"
      Call PointAtGuest
    ${Else}
      !insertmacro Log "the guest $GuestName was not created (exit code $0): $1"
      MessageBox MB_ICONEXCLAMATION|MB_OK "The guest $GuestName was not created:$\r$\n$\r$\n$1" /SD IDOK
      SetErrorLevel 4
    ${EndIf}
  ${EndIf}
SectionEnd

; colinux.conf, which the Start menu, the console shortcut and the service
; use, becomes the created guest's config.
Function PointAtGuest
  FileOpen $0 "$INSTDIR\colinux.conf" w
  FileWrite $0 "# The guest $GuestName, which the installer created with colinux-daemon --create.$\r$\n"
  FileWrite $0 "# Its disk and config are in $DataDir; uninstalling leaves them there.$\r$\n"
  FileWrite $0 '@"$DataDir\$GuestName.conf"$\r$\n'
  FileClose $0
  !insertmacro Log "$INSTDIR\colinux.conf starts the guest $GuestName ($DataDir\$GuestName.conf)"
FunctionEnd
!endif

Section /o "Windows service (starts the guest at boot)" SecService
  ${If} $ServiceName == ""
    StrCpy $ServiceName "colinux"
  ${EndIf}
SectionEnd

; Last, once colinux.conf is final: the service the ini or the page asked for.
Section "-service"
  ${If} $ServiceName != ""
    Call InstallService
  ${EndIf}
SectionEnd

; colinux-daemon --install-service NAME @colinux.conf (runtime/daemon/README.md).
Function InstallService
  !insertmacro Log "creating the service colinux-$ServiceName"
  nsExec::ExecToStack '"$INSTDIR\colinux-daemon.exe" --install-service $ServiceName "@$INSTDIR\colinux.conf"'
  Pop $0
  Pop $1
  ${If} $0 == "0"
    WriteRegStr HKLM "${REGKEY}" "Service" "$ServiceName"
  ${Else}
    !insertmacro Log "the service colinux-$ServiceName was not created (exit code $0): $1"
    MessageBox MB_ICONEXCLAMATION|MB_OK "The service colinux-$ServiceName was not created:$\r$\n$\r$\n$1" /SD IDOK
    SetErrorLevel 3
  ${EndIf}
FunctionEnd

!insertmacro MUI_FUNCTION_DESCRIPTION_BEGIN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecMain} "colinux-daemon, colinux-console, the guest kernels, the documentation and colinux.conf."
  !ifdef IMAGE_DEBIAN
    !insertmacro MUI_DESCRIPTION_TEXT ${SecImage} "The stock Debian image, and a guest made from it in $DataDir (its own disk, SSH forwarded from 127.0.0.1), which the Start menu starts."
  !endif
  !insertmacro MUI_DESCRIPTION_TEXT ${SecService} "A Windows service, colinux-colinux, that runs the guest of colinux.conf at boot (colinux-daemon --install-service)."
!insertmacro MUI_FUNCTION_DESCRIPTION_END

; Removes what the installer wrote, by name: the user's disk images and any
; other file in the folder stay (and then so does the folder), and so do
; the guests in %ProgramData%\coLinux.
Section "Uninstall"
  ReadRegStr $0 HKLM "${REGKEY}" "Service"
  ${If} $0 != ""
    nsExec::ExecToLog '"$INSTDIR\colinux-daemon.exe" --remove-service $0'
    Pop $1
  ${EndIf}
  !insertmacro Payload OptDelete
  Delete "$INSTDIR\images\debian.ext4.zst"
  RMDir "$INSTDIR\images"
  Delete "$INSTDIR\colinux.conf"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"

  SetShellVarContext all
  Delete "$SMPROGRAMS\coLinux\coLinux.lnk"
  Delete "$SMPROGRAMS\coLinux\coLinux console.lnk"
  Delete "$SMPROGRAMS\coLinux\coLinux configuration.lnk"
  Delete "$SMPROGRAMS\coLinux\Uninstall coLinux.lnk"
  RMDir "$SMPROGRAMS\coLinux"

  DeleteRegKey HKLM "${UNINST_KEY}"
  DeleteRegKey HKLM "${REGKEY}"
SectionEnd
