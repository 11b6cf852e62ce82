; The coLinux installer for 64-bit Windows.
;
; Built with Debian's native makensis (never under Wine) by
; colinux_packaging::nsis::build, which passes every input as a define:
;   -DVERSION=0.1.0 -DVERSION_QUAD=0.1.0.0 -DOUTFILE=…-setup.exe
;   -DDAEMON_EXE=… -DCONSOLE_EXE=… -DDEFAULT_CONF=…/windows/colinux.conf
;   -DKERNEL_I386=…/bzImage [-DKERNEL_X86_64=…/bzImage]
;   [-DDOC_1=…/README.md -DDOC_1_NAME=README.md … up to DOC_16]
;   [-DUNINSTALLER_SIGN_SCRIPT=…/sign.sh]  (signs the uninstaller at build time)
;
; Silent mass deployment, as coMosix did: `setup.exe /S [/D=C:\coLinux]`
; reads colinux.ini (else comosix.ini) beside setup.exe. colinux-daemon
; turns it into colinux.conf with the config crate's own rules
; (--from-ini) before anything is copied; an error there ends the install
; with exit code 2 and nothing installed. See runtime/packaging/README.md.
;
; Exit codes: 0 installed; 1 cancelled; 2 the ini was refused, nothing
; installed; 3 installed, but the Windows service could not be created.

Unicode true
Target amd64-unicode
SetCompressor /SOLID lzma
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
Var ServiceDone

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
    StrCpy $ServiceName ""
    ${If} $1 != ""
      StrCpy $2 $1 8
      ${If} $2 == "service="
        StrCpy $ServiceName $1 "" 8
      ${EndIf}
    ${EndIf}
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
  ${If} $QemuPath == ""
    !insertmacro Log "warning: QEMU for Windows was not found: get it from ${QEMU_URL} and set qemu= in colinux.conf"
    MessageBox MB_ICONINFORMATION|MB_OK "QEMU for Windows was not found.$\r$\n$\r$\ncoLinux runs its guests on QEMU: install it from ${QEMU_URL}, then set qemu= in $INSTDIR\colinux.conf (the QEMU installer's default folder is found by itself on the next install)." /SD IDOK
  ${Else}
    !insertmacro Log "QEMU: $QemuPath"
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

  ${If} $ServiceName != ""
    Call InstallService
  ${EndIf}
SectionEnd

Section /o "Windows service (starts the guest at boot)" SecService
  ${If} $ServiceDone != "1"
    StrCpy $ServiceName "colinux"
    Call InstallService
  ${EndIf}
SectionEnd

; colinux-daemon --install-service NAME @colinux.conf (runtime/daemon/README.md).
Function InstallService
  StrCpy $ServiceDone "1"
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
  !insertmacro MUI_DESCRIPTION_TEXT ${SecService} "A Windows service, colinux-colinux, that runs the guest of colinux.conf at boot (colinux-daemon --install-service)."
!insertmacro MUI_FUNCTION_DESCRIPTION_END

; Removes what the installer wrote, by name: the user's disk images and any
; other file in the folder stay (and then so does the folder).
Section "Uninstall"
  ReadRegStr $0 HKLM "${REGKEY}" "Service"
  ${If} $0 != ""
    nsExec::ExecToLog '"$INSTDIR\colinux-daemon.exe" --remove-service $0'
    Pop $1
  ${EndIf}
  !insertmacro Payload OptDelete
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
